/* HMAC-SHA256 of credentials, for the verify hot path.
 *
 * The same function as gateway/crypto/digests.py's pure-Python Digester, computed with
 * OpenSSL's SHA-256 (the libcrypto CPython's hashlib links, SHA-NI where the CPU has it),
 * but without hashlib's per-call object churn: the keyed inner and outer states are set up
 * once, and each digest copies two plain structs instead of allocating four EVP contexts.
 * digest_many does a whole batchVerify in one call.
 *
 *   Hmac256(key: bytes, prefix: str).digest(credential: str) -> str   prefix + 64 hex digits
 *   Hmac256(key, prefix).digest_many(credentials: list[str]) -> list[str]
 *
 * The credential is hashed as its UTF-8 encoding (str.encode()); a string that has no
 * UTF-8 encoding (a lone surrogate) raises UnicodeEncodeError, as str.encode() does.
 * tests/crypto/test_digests.py checks this against the standard library's hmac.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co.: the low-level, allocation-free API */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#define BLOCK 64
#define MAX_PREFIX 16

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner; /* state after absorbing K ^ ipad */
    SHA256_CTX outer; /* state after absorbing K ^ opad */
    char prefix[MAX_PREFIX];
    Py_ssize_t prefix_len;
} Hmac256;

static const char HEX[] = "0123456789abcdef";

static PyObject *
one(Hmac256 *self, PyObject *credential)
{
    if (!PyUnicode_Check(credential)) {
        PyErr_Format(PyExc_TypeError, "credential must be str, not %.100s",
                     Py_TYPE(credential)->tp_name);
        return NULL;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(credential, &size);
    if (data == NULL)
        return NULL;
    unsigned char mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = self->inner;
    SHA256_Update(&ctx, data, (size_t)size);
    SHA256_Final(mac, &ctx);
    ctx = self->outer;
    SHA256_Update(&ctx, mac, sizeof mac);
    SHA256_Final(mac, &ctx);
    OPENSSL_cleanse(&ctx, sizeof ctx);

    PyObject *out = PyUnicode_New(self->prefix_len + 2 * SHA256_DIGEST_LENGTH, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *text = PyUnicode_1BYTE_DATA(out);
    memcpy(text, self->prefix, (size_t)self->prefix_len);
    text += self->prefix_len;
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        text[2 * i] = (Py_UCS1)HEX[mac[i] >> 4];
        text[2 * i + 1] = (Py_UCS1)HEX[mac[i] & 0xf];
    }
    return out;
}

static PyObject *
digest_many(Hmac256 *self, PyObject *credentials)
{
    if (!PyList_Check(credentials)) {
        PyErr_Format(PyExc_TypeError, "credentials must be a list, not %.100s",
                     Py_TYPE(credentials)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(credentials);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* one() runs no Python code, but PyList_New above may have run a collection
         * (and so a finalizer) after n was read */
        if (i >= PyList_GET_SIZE(credentials)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "credentials changed size during digest_many");
            return NULL;
        }
        PyObject *digest = one(self, PyList_GET_ITEM(credentials, i));
        if (digest == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, digest);
    }
    return out;
}

static int
init(Hmac256 *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"key", "prefix", NULL};
    Py_buffer key;
    const char *prefix;
    Py_ssize_t prefix_len;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*s#:Hmac256", names, &key, &prefix,
                                     &prefix_len))
        return -1;
    int ascii = 1;
    for (Py_ssize_t i = 0; i < prefix_len; i++)
        ascii &= (unsigned char)prefix[i] < 128;
    if (prefix_len > MAX_PREFIX || !ascii) { /* digests are built as ASCII strings */
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "prefix must be ASCII, at most %d bytes", MAX_PREFIX);
        return -1;
    }
    unsigned char block[BLOCK] = {0}, pad[BLOCK];
    if (key.len > BLOCK) /* RFC 2104: a key longer than a block is hashed first */
        SHA256(key.buf, (size_t)key.len, block);
    else
        memcpy(block, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&self->inner);
    SHA256_Update(&self->inner, pad, BLOCK);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&self->outer);
    SHA256_Update(&self->outer, pad, BLOCK);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    memcpy(self->prefix, prefix, (size_t)prefix_len);
    self->prefix_len = prefix_len;
    return 0;
}

static void
dealloc(Hmac256 *self)
{
    OPENSSL_cleanse(&self->inner, sizeof self->inner);
    OPENSSL_cleanse(&self->outer, sizeof self->outer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
hmac_repr(Hmac256 *self)
{
    (void)self;
    return PyUnicode_FromString("Hmac256(key=***)");
}

static PyMethodDef methods[] = {
    {"digest", (PyCFunction)one, METH_O,
     "digest(credential: str) -> str: prefix + hex HMAC-SHA256 of the UTF-8 credential"},
    {"digest_many", (PyCFunction)digest_many, METH_O,
     "digest_many(credentials: list[str]) -> list[str]: digest of each, in order"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Hmac256Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.crypto._hmac256.Hmac256",
    .tp_doc = "HMAC-SHA256 under a fixed key, hex-encoded behind a fixed prefix.",
    .tp_basicsize = sizeof(Hmac256),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)init,
    .tp_dealloc = (destructor)dealloc,
    .tp_repr = (reprfunc)hmac_repr,
    .tp_methods = methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_hmac256",
    .m_doc = "HMAC-SHA256 digests of credentials (OpenSSL).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__hmac256(void)
{
    if (PyType_Ready(&Hmac256Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&Hmac256Type);
    if (PyModule_AddObject(m, "Hmac256", (PyObject *)&Hmac256Type) < 0) {
        Py_DECREF(&Hmac256Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
