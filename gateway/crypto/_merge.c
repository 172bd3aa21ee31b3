/* merge(a, b) and sort(values), on arrays of 64-bit unsigned integers (array("Q") or any
 * buffer of format "Q"), with the GIL released: DigestSet (gateway.crypto.secrets_format)
 * moves the digests of new imported keys into its sorted array in a thread, off the event
 * loop.
 *
 * Why: the merge in Python ran on the event loop in 2,048-entry slices (each building
 * Python ints: about 0.2 ms), some 500 slices a merge at 1,000,000 keys, one merge per
 * 65,536 keys imported; every slice was added to the requests waiting on the loop, and a
 * replica's p99 during a bulk import grew with the table. Here a merge of 1,000,000 is a
 * few milliseconds in a thread, and the loop goes on meanwhile.
 *
 * merge returns a new bytes object, allocated uninitialised and written with the GIL
 * released: making the output on the loop (array("Q", bytes(8 * n))) held it 8-10 ms at
 * 1,000,000 entries, zeroing and copying 8 MB. The buffers are held (exported) while the
 * GIL is released: the arrays cannot be resized meanwhile; DigestSet never writes to them
 * once built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int
u64_buffer(PyObject *obj, Py_buffer *view, int writable)
{
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS
                           | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "Q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "expected an array('Q')");
        return -1;
    }
    return 0;
}

static PyObject *
merge(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "merge(a, b)");
        return NULL;
    }
    Py_buffer a, b;
    if (u64_buffer(args[0], &a, 0) < 0)
        return NULL;
    if (u64_buffer(args[1], &b, 0) < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    /* uninitialised: every byte is written below, without the GIL (and the pages of a
     * large one are first touched there, not on the event loop) */
    PyObject *out = PyBytes_FromStringAndSize(NULL, a.len + b.len);
    if (out != NULL) {
        uint64_t *o = (uint64_t *)PyBytes_AS_STRING(out);
        const uint64_t *x = a.buf, *y = b.buf;
        Py_ssize_t n = a.len / 8, m = b.len / 8, i = 0, j = 0, k = 0;
        Py_BEGIN_ALLOW_THREADS
        while (i < n && j < m)
            o[k++] = x[i] <= y[j] ? x[i++] : y[j++];
        while (i < n)
            o[k++] = x[i++];
        while (j < m)
            o[k++] = y[j++];
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&b);
    PyBuffer_Release(&a);
    return out;
}

static int
compare(const void *p, const void *q)
{
    uint64_t x = *(const uint64_t *)p, y = *(const uint64_t *)q;
    return (x > y) - (x < y);
}

static PyObject *
sort(PyObject *module, PyObject *values)
{
    Py_buffer view;
    if (u64_buffer(values, &view, 1) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    qsort(view.buf, (size_t)(view.len / 8), 8, compare);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"merge", (PyCFunction)(void (*)(void))merge, METH_FASTCALL,
     "merge(a, b): the sorted a and b (array('Q')) merged, as bytes, GIL released"},
    {"sort", sort, METH_O, "sort(values): an array('Q') sorted in place, GIL released"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_merge", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__merge(void)
{
    return PyModule_Create(&module);
}
