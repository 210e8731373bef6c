/* Where each query hash sits in a sorted array of key hashes, through core.changes.Basis's
 * bucket index (starts[b] .. starts[b+1] hold the hashes whose top ``bits`` bits are b).
 *
 * A numpy version of the same search runs ~8 vectorised rounds over every query; this is one
 * short binary search per query, without the GIL. core/changes.py keeps the numpy version as
 * the fallback and tests/core/test_changes.py holds the two together.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Queries looked ahead when prefetching. */
#define AHEAD 8
#define BUCKET(key) (((key) >> (64 - bits)) + ((int64_t)1 << (bits - 1)))

PyDoc_STRVAR(positions_doc,
             "positions(hashes, starts, bits, queries, at, found)\n\n"
             "at[i]: the first index j with hashes[j] >= queries[i] (clamped to len(hashes) - 1);\n"
             "found[i]: hashes[at[i]] == queries[i]. hashes, queries, starts, at: int64; found: bool.");

static PyObject *positions(PyObject *self, PyObject *args) {
    PyObject *h_obj, *s_obj, *q_obj, *at_obj, *f_obj;
    int bits;
    if (!PyArg_ParseTuple(args, "OOiOOO", &h_obj, &s_obj, &bits, &q_obj, &at_obj, &f_obj)) return NULL;
    Py_buffer h = {0}, s = {0}, q = {0}, at = {0}, f = {0};
    PyObject *result = NULL;
    if (PyObject_GetBuffer(h_obj, &h, PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(s_obj, &s, PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(q_obj, &q, PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(at_obj, &at, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (PyObject_GetBuffer(f_obj, &f, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    Py_ssize_t n = h.len / 8, nq = q.len / 8, buckets = s.len / 8 - 1;
    if (bits < 1 || bits > 62 || buckets != ((Py_ssize_t)1 << bits) || n < 1 || at.len != q.len ||
        f.len != nq || h.len % 8 || q.len % 8) {
        PyErr_SetString(PyExc_ValueError, "positions: arrays do not match (starts needs 2**bits + 1 entries)");
        goto done;
    }
    const int64_t *hashes = (const int64_t *)h.buf, *starts = (const int64_t *)s.buf;
    const int64_t *queries = (const int64_t *)q.buf;
    int64_t *out = (int64_t *)at.buf;
    uint8_t *found = (uint8_t *)f.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nq; i++) {
        /* Random lookups wait on memory: fetch a later query's bucket bounds, and a nearer
         * one's hashes, ahead of time (two dependent loads, pipelined). */
        if (i + 2 * AHEAD < nq) __builtin_prefetch(&starts[BUCKET(queries[i + 2 * AHEAD])]);
        if (i + AHEAD < nq) {
            int64_t at_ahead = starts[BUCKET(queries[i + AHEAD])];
            if (at_ahead >= 0 && at_ahead < n) __builtin_prefetch(&hashes[at_ahead]);
        }
        int64_t key = queries[i];
        int64_t b = BUCKET(key);
        int64_t lo = starts[b], hi = starts[b + 1];
        if (lo < 0 || hi > n || lo > hi) {
            bad = 1;
            break;
        }
        while (lo < hi) {
            int64_t mid = (lo + hi) >> 1;
            if (hashes[mid] < key) lo = mid + 1;
            else hi = mid;
        }
        if (lo > n - 1) lo = n - 1;
        out[i] = lo;
        found[i] = hashes[lo] == key;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "positions: the bucket index points outside the hashes");
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (h.obj) PyBuffer_Release(&h);
    if (s.obj) PyBuffer_Release(&s);
    if (q.obj) PyBuffer_Release(&q);
    if (at.obj) PyBuffer_Release(&at);
    if (f.obj) PyBuffer_Release(&f);
    return result;
}

static PyMethodDef methods[] = {
    {"positions", positions, METH_VARARGS, positions_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lookup", "Key hash lookups through a bucket index (see core/changes.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__lookup(void) { return PyModule_Create(&module); }
