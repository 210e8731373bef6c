/* One column's numeric statistics on fixed histogram edges, in two passes over a float64 array.
 *
 * core/stats.py computes a shard's (and the incremental planner's) statistics of every numeric
 * input against the reference's edges; in numpy that is eight passes (null filter, copy, mean,
 * std, min, max, searchsorted, bincount). Here: pass one counts, sums and finds min and max;
 * pass two sums squared deviations from the mean (numpy's two-pass std) and counts the bins
 * (numpy.searchsorted(inner_edges, value, side="right")). NaN is a null. Runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

PyDoc_STRVAR(summary_doc,
             "summary(values, inner_edges, counts) -> (valid, mean, std, min, max)\n\n"
             "values: contiguous float64 (NaN = null); inner_edges: sorted float64; counts: int64 with\n"
             "len(inner_edges) + 1 slots, added to. mean/std/min/max are None without a valid value.");

static PyObject *summary(PyObject *self, PyObject *args) {
    PyObject *values_obj, *edges_obj, *counts_obj;
    if (!PyArg_ParseTuple(args, "OOO", &values_obj, &edges_obj, &counts_obj)) return NULL;
    Py_buffer values = {0}, edges = {0}, counts = {0};
    PyObject *result = NULL;
    if (PyObject_GetBuffer(values_obj, &values, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    if (PyObject_GetBuffer(edges_obj, &edges, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    if (PyObject_GetBuffer(counts_obj, &counts, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    if (values.itemsize != 8 || edges.itemsize != 8 || counts.itemsize != 8 ||
        (values.format && values.format[0] != 'd') || (edges.format && edges.format[0] != 'd')) {
        PyErr_SetString(PyExc_TypeError, "values and inner_edges must be float64, counts int64");
        goto done;
    }
    Py_ssize_t n = values.len / 8, m = edges.len / 8;
    if (counts.len / 8 != m + 1) {
        PyErr_SetString(PyExc_ValueError, "counts must have len(inner_edges) + 1 slots");
        goto done;
    }
    const double *x = (const double *)values.buf;
    const double *e = (const double *)edges.buf;
    long long *c = (long long *)counts.buf;
    Py_ssize_t valid = 0;
    double sum = 0.0, lo = INFINITY, hi = -INFINITY, sq = 0.0, mean = 0.0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v)) continue;
        valid++;
        sum += v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    mean = valid ? sum / (double)valid : 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v)) continue;
        double d = v - mean;
        sq += d * d;
        /* searchsorted(side="right"): the number of edges <= v (edges are few: a linear scan). */
        Py_ssize_t k = 0;
        while (k < m && e[k] <= v) k++;
        c[k]++;
    }
    Py_END_ALLOW_THREADS
    if (!valid) {
        result = Py_BuildValue("(nOOOO)", valid, Py_None, Py_None, Py_None, Py_None);
    } else {
        result = Py_BuildValue("(ndddd)", valid, mean, sqrt(sq / (double)valid), lo, hi);
    }
done:
    if (values.obj) PyBuffer_Release(&values);
    if (edges.obj) PyBuffer_Release(&edges);
    if (counts.obj) PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef methods[] = {
    {"summary", summary, METH_VARARGS, summary_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_moments", "One column's numeric statistics (see core/stats.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__moments(void) { return PyModule_Create(&module); }
