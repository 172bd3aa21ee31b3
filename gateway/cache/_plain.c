/* The cached-yes path of a batchVerify, a loop of C per batch instead of one of Python:
 *
 * bare(items, limit, starts, others) -> list[str | None]
 *
 * For each item of the request, its credential when the item is exactly
 * {"credential": <str>} with 0 < len <= limit that starts with none of ``starts`` (a root
 * key's shape, not a derived token: gateway.http.l1_answers.bare), else None, and its
 * index appended to the list ``others`` (the route reads those items in Python; asking a
 * list of 100 strings whether it holds None costs 100 comparisons that each fall back
 * twice). gateway.http.l1_answers.bare_many is the same in Python.
 *
 * answers(table, digests, now, wall_us, used, valid, due, left) -> list[bytes | None]
 *
 * The "cached yes" rule of gateway.cache.entry (answers_alone) for a whole batchVerify,
 * in one call: for each digest, the bytes of its positive verify answer (head + tail)
 * when L1's table holds it unexpired in L1 (``now`` before the item's expiry), plain (no
 * IP allow-list, no rate limit, not revoked) and unexpired at ``wall_us`` (µs since the
 * epoch); the use is then recorded as the Python loop records it (``used[key_id]`` moves
 * forwards to ``now``, ``valid[key_id]`` counts one more), and a digest answered at or past
 * its refresh time is appended to the list ``due`` (the caller marks it, as L1.fresh
 * does). None for every other digest (absent, expired, not plain, or anything unexpected),
 * and its index appended to the list ``left``: the caller decides those in Python.
 * entry.plain_answers is the same function in Python, for where this was not built;
 * tests/cache/test_plain_answers.py holds them to each other.
 *
 * Layouts, as gateway/cache/l1.py and gateway/cache/entry.py make them:
 *   table[digest] = (refresh_at: float, cached, expires: float)
 *   cached = (plain: bool, expire_time: int | None, key_id: str, head: bytes, tail: bytes, ...)
 *
 * No Python code runs inside the loop (str keys, exact dicts, no allocation of objects
 * the garbage collector tracks), so the borrowed references stay valid.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum { PLAIN = 0, EXPIRES = 1, KEY_ID = 2, HEAD = 3, TAIL = 4, FIELDS = 5 };

static int
append_index(PyObject *list, Py_ssize_t i)
{
    PyObject *index = PyLong_FromSsize_t(i);
    if (index == NULL)
        return -1;
    int failed = PyList_Append(list, index);
    Py_DECREF(index);
    return failed;
}

/* 1: answered (``*answer`` set, use recorded), 0: not (decided in Python), -1: error */
static int
one(PyObject *table, PyObject *digest, double now, PyObject *now_obj, long long wall_us,
    PyObject *used, PyObject *valid, PyObject *due, PyObject **answer)
{
    if (!PyUnicode_CheckExact(digest))
        return 0;
    PyObject *item = PyDict_GetItemWithError(table, digest);
    if (item == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < 3)
        return 0;
    PyObject *refresh_at = PyTuple_GET_ITEM(item, 0), *until = PyTuple_GET_ITEM(item, 2);
    if (!PyFloat_CheckExact(refresh_at) || !PyFloat_CheckExact(until)
            || !(PyFloat_AS_DOUBLE(until) > now))
        return 0;  /* expired in L1: the Python path drops it */
    int is_due = !(PyFloat_AS_DOUBLE(refresh_at) > now);
    PyObject *cached = PyTuple_GET_ITEM(item, 1);
    if (!PyTuple_CheckExact(cached) || PyTuple_GET_SIZE(cached) < FIELDS
            || PyTuple_GET_ITEM(cached, PLAIN) != Py_True)
        return 0;
    PyObject *expires = PyTuple_GET_ITEM(cached, EXPIRES);
    if (expires != Py_None) {
        if (!PyLong_CheckExact(expires))
            return 0;
        int overflow;
        long long at = PyLong_AsLongLongAndOverflow(expires, &overflow);
        if (at == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0 || (overflow == 0 && at <= wall_us))
            return 0;  /* expired: the Python path says so */
    }
    PyObject *key_id = PyTuple_GET_ITEM(cached, KEY_ID);
    PyObject *head = PyTuple_GET_ITEM(cached, HEAD);
    PyObject *tail = PyTuple_GET_ITEM(cached, TAIL);
    if (!PyUnicode_CheckExact(key_id) || !PyBytes_CheckExact(head) || !PyBytes_CheckExact(tail))
        return 0;
    /* the use: used[key_id] = now unless a later use is recorded; valid[key_id] += 1 */
    PyObject *last = PyDict_GetItemWithError(used, key_id);
    if (last == NULL && PyErr_Occurred())
        return -1;
    if (last == NULL || !PyFloat_CheckExact(last) || PyFloat_AS_DOUBLE(last) < now) {
        if (PyDict_SetItem(used, key_id, now_obj) < 0)
            return -1;
    }
    PyObject *count = PyDict_GetItemWithError(valid, key_id);
    if (count == NULL && PyErr_Occurred())
        return -1;
    Py_ssize_t n = 0;
    if (count != NULL) {
        n = PyLong_AsSsize_t(count);
        if (n == -1 && PyErr_Occurred())
            return -1;
    }
    PyObject *more = PyLong_FromSsize_t(n + 1);
    if (more == NULL)
        return -1;
    int failed = PyDict_SetItem(valid, key_id, more);
    Py_DECREF(more);
    if (failed < 0)
        return -1;
    Py_ssize_t head_len = PyBytes_GET_SIZE(head), tail_len = PyBytes_GET_SIZE(tail);
    if (is_due && PyList_Append(due, digest) < 0)
        return -1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, head_len + tail_len);
    if (out == NULL)
        return -1;
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(head), (size_t)head_len);
    memcpy(PyBytes_AS_STRING(out) + head_len, PyBytes_AS_STRING(tail), (size_t)tail_len);
    *answer = out;
    return 1;
}

static PyObject *
answers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "answers() takes 8 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *table = args[0], *digests = args[1], *now_obj = args[2];
    PyObject *used = args[4], *valid = args[5], *due = args[6], *left = args[7];
    if (!PyDict_CheckExact(table) || !PyList_CheckExact(digests) || !PyFloat_CheckExact(now_obj)
            || !PyDict_CheckExact(used) || !PyDict_CheckExact(valid) || !PyList_CheckExact(due)
            || !PyList_CheckExact(left)) {
        PyErr_SetString(PyExc_TypeError,
                        "answers(table: dict, digests: list, now: float, wall_us: int, "
                        "used: dict, valid: dict, due: list, left: list)");
        return NULL;
    }
    double now = PyFloat_AS_DOUBLE(now_obj);
    long long wall_us = PyLong_AsLongLong(args[3]);
    if (wall_us == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(digests);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* PyList_New may have run a collection (and so a finalizer) after n was read */
        if (i >= PyList_GET_SIZE(digests)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "digests changed size during answers");
            return NULL;
        }
        PyObject *answer = NULL;
        int found = one(table, PyList_GET_ITEM(digests, i), now, now_obj, wall_us, used, valid,
                        due, &answer);
        if (found < 0 || (!found && append_index(left, i) < 0)) {
            Py_XDECREF(answer);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, found ? answer : Py_NewRef(Py_None));
    }
    return out;
}

static PyObject *CREDENTIAL; /* "credential", interned */

static PyObject *
bare(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[2])
            || !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "bare(items: list, limit: int, starts: tuple[str, ...], others: list)");
        return NULL;
    }
    PyObject *items = args[0], *starts = args[2], *others = args[3];
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(starts); k++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(starts, k))) {
            PyErr_SetString(PyExc_TypeError, "bare: starts must be a tuple of str");
            return NULL;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PyList_GET_SIZE(items)) { /* see answers */
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "items changed size during bare");
            return NULL;
        }
        PyObject *item = PyList_GET_ITEM(items, i), *found = Py_None;
        if (PyDict_CheckExact(item) && PyDict_GET_SIZE(item) == 1) {
            PyObject *c = PyDict_GetItemWithError(item, CREDENTIAL);
            if (c == NULL && PyErr_Occurred()) {
                Py_DECREF(out);
                return NULL;
            }
            if (c != NULL && PyUnicode_CheckExact(c) && PyUnicode_GET_LENGTH(c) > 0
                    && PyUnicode_GET_LENGTH(c) <= limit) {
                found = c;
                for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(starts); k++) {
                    Py_ssize_t match = PyUnicode_Tailmatch(c, PyTuple_GET_ITEM(starts, k), 0,
                                                           PY_SSIZE_T_MAX, -1);
                    if (match < 0) {
                        Py_DECREF(out);
                        return NULL;
                    }
                    if (match) {
                        found = Py_None;
                        break;
                    }
                }
            }
        }
        if (found == Py_None && append_index(others, i) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, Py_NewRef(found));
    }
    return out;
}

static PyMethodDef methods[] = {
    {"bare", (PyCFunction)(void (*)(void))bare, METH_FASTCALL,
     "bare(items, limit, starts, others) -> list[str | None]: the credentials of the items "
     "that are exactly {\"credential\": str} of a root key's shape; None for the others, "
     "their indices listed"},
    {"answers", (PyCFunction)(void (*)(void))answers, METH_FASTCALL,
     "answers(table, digests, now, wall_us, used, valid, due, left) -> list[bytes | None]: "
     "the positive verify answers L1 gives alone, uses recorded, due ones listed; None "
     "where Python decides, their indices listed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_plain",
    .m_doc = "A batchVerify's cached-yes path: its bare credentials, L1's answers for them.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__plain(void)
{
    CREDENTIAL = PyUnicode_InternFromString("credential");
    if (CREDENTIAL == NULL)
        return NULL;
    return PyModule_Create(&module);
}
