/* untracked(obj) -> obj: a tuple of strings, bytes, numbers, None and such tuples, taken
 * out of the garbage collector's sight at once (CPython does the same lazily, one nesting
 * level per full collection: gc's untrack_tuples).
 *
 * Why: L1 keeps 100,000s of entries in one dict. Inserting a tuple the collector still
 * tracks makes the dict tracked again, and every full collection then walks all of its
 * entries (200,000: 10-25 ms with every request held). A tuple put untracked leaves the
 * dict untracked once a collection has untracked it.
 *
 * A tuple holding anything the collector may track (a list, a dict, an object, a tuple it
 * tracks) is left as it is: only what cannot be part of a reference cycle is untracked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DEPTH 16  /* deeper tuples are left to the collector (entries nest 2 levels) */

static int
untrack(PyObject *obj, int depth)  /* 1: obj is out of the collector's sight, 0: not */
{
    if (!PyObject_IS_GC(obj))
        return 1;
    if (!PyTuple_CheckExact(obj))
        return 0;
    if (!PyObject_GC_IsTracked(obj))
        return 1;
    if (depth >= MAX_DEPTH)
        return 0;
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!untrack(PyTuple_GET_ITEM(obj, i), depth + 1))
            return 0;
    }
    PyObject_GC_UnTrack(obj);
    return 1;
}

static PyObject *
untracked(PyObject *module, PyObject *obj)
{
    (void)module;
    untrack(obj, 0);
    return Py_NewRef(obj);
}

static PyMethodDef methods[] = {
    {"untracked", (PyCFunction)untracked, METH_O,
     "untracked(obj) -> obj: untracked by the garbage collector when it is a tuple of "
     "atoms and such tuples (nothing that can be part of a cycle)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_untrack",
    .m_doc = "Tuples of atoms taken out of the garbage collector's sight at once.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__untrack(void)
{
    return PyModule_Create(&module);
}
