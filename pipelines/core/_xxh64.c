/* XXH64 over whole columns, for core.keys and core.fingerprint.
 *
 * The reference xxHash 64-bit algorithm (https://github.com/Cyan4973/xxHash, the same one
 * Spark's XXH64 and the ``xxhash`` package implement), applied to every value of a column with
 * one seed per row, written back over the seeds (so hashes chain column after column). The
 * numpy implementation in core/keys.py computes the same numbers and stays as the fallback
 * when this module is not built; tests/core/test_native_hash.py holds the two together.
 *
 * The loops run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define P1 11400714785074694791ULL
#define P2 14029467366897019727ULL
#define P3 1609587929392839161ULL
#define P4 9650029242287828579ULL
#define P5 2870177450012600261ULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t read64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t read32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t lane) {
    acc += lane * P2;
    return rotl(acc, 31) * P1;
}

static inline uint64_t merge64(uint64_t h, uint64_t v) {
    h ^= round64(0, v);
    return h * P1 + P4;
}

static uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed) {
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = round64(v1, read64(p));
            v2 = round64(v2, read64(p + 8));
            v3 = round64(v3, read64(p + 16));
            v4 = round64(v4, read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = merge64(h, v1);
        h = merge64(h, v2);
        h = merge64(h, v3);
        h = merge64(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= round64(0, read64(p));
        h = rotl(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* Buffers of the arguments, released together. */
typedef struct {
    Py_buffer data, offsets, valid, seeds;
    int has_valid;
} Args;

static void release(Args *a) {
    if (a->data.obj) PyBuffer_Release(&a->data);
    if (a->offsets.obj) PyBuffer_Release(&a->offsets);
    if (a->valid.obj) PyBuffer_Release(&a->valid);
    if (a->seeds.obj) PyBuffer_Release(&a->seeds);
}

static int get_seeds(PyObject *obj, Args *a, Py_ssize_t *n) {
    if (PyObject_GetBuffer(obj, &a->seeds, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (a->seeds.len % 8) {
        PyErr_SetString(PyExc_ValueError, "seeds must be a contiguous uint64 array");
        return -1;
    }
    *n = a->seeds.len / 8;
    return 0;
}

static int get_valid(PyObject *obj, Args *a, Py_ssize_t n) {
    a->has_valid = obj != Py_None;
    if (!a->has_valid) return 0;
    if (PyObject_GetBuffer(obj, &a->valid, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (a->valid.len != n) {
        PyErr_SetString(PyExc_ValueError, "valid must be one byte (bool) per row");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(hash_var_doc,
             "hash_var(data, offsets, valid, seeds)\n\n"
             "seeds[i] = XXH64(data[offsets[i]:offsets[i+1]], seed=seeds[i]) where valid[i]\n"
             "(valid: a bool array or None for all rows); offsets: int32 or int64, one more than seeds.");

static PyObject *hash_var(PyObject *self, PyObject *args) {
    PyObject *data_obj, *offsets_obj, *valid_obj, *seeds_obj;
    if (!PyArg_ParseTuple(args, "OOOO", &data_obj, &offsets_obj, &valid_obj, &seeds_obj)) return NULL;
    Args a;
    memset(&a, 0, sizeof a);
    Py_ssize_t n;
    if (get_seeds(seeds_obj, &a, &n) < 0) goto fail;
    if (get_valid(valid_obj, &a, n) < 0) goto fail;
    if (PyObject_GetBuffer(data_obj, &a.data, PyBUF_C_CONTIGUOUS) < 0) goto fail;
    if (PyObject_GetBuffer(offsets_obj, &a.offsets, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
    Py_ssize_t width = a.offsets.itemsize;
    if ((width != 4 && width != 8) || a.offsets.len != (n + 1) * width) {
        PyErr_SetString(PyExc_ValueError, "offsets must be int32 or int64 with one entry more than seeds");
        goto fail;
    }
    const uint8_t *data = (const uint8_t *)a.data.buf;
    const uint8_t *valid = a.has_valid ? (const uint8_t *)a.valid.buf : NULL;
    uint64_t *seeds = (uint64_t *)a.seeds.buf;
    const int32_t *off32 = (const int32_t *)a.offsets.buf;
    const int64_t *off64 = (const int64_t *)a.offsets.buf;
    Py_ssize_t size = a.data.len;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (valid && !valid[i]) continue;
        int64_t lo = width == 4 ? off32[i] : off64[i];
        int64_t hi = width == 4 ? off32[i + 1] : off64[i + 1];
        if (lo < 0 || hi < lo || hi > size) {
            bad = 1;
            break;
        }
        seeds[i] = xxh64(data + lo, (size_t)(hi - lo), seeds[i]);
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets point outside data");
        goto fail;
    }
    release(&a);
    Py_RETURN_NONE;
fail:
    release(&a);
    return NULL;
}

PyDoc_STRVAR(hash_fixed_doc,
             "hash_fixed(data, width, valid, seeds)\n\n"
             "seeds[i] = XXH64(data[i*width:(i+1)*width], seed=seeds[i]) where valid[i]\n"
             "(valid: a bool array or None for all rows).");

static PyObject *hash_fixed(PyObject *self, PyObject *args) {
    PyObject *data_obj, *valid_obj, *seeds_obj;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "OnOO", &data_obj, &width, &valid_obj, &seeds_obj)) return NULL;
    Args a;
    memset(&a, 0, sizeof a);
    Py_ssize_t n;
    if (get_seeds(seeds_obj, &a, &n) < 0) goto fail;
    if (get_valid(valid_obj, &a, n) < 0) goto fail;
    if (PyObject_GetBuffer(data_obj, &a.data, PyBUF_C_CONTIGUOUS) < 0) goto fail;
    if (width < 0 || a.data.len != n * width) {
        PyErr_SetString(PyExc_ValueError, "data must hold width bytes per row");
        goto fail;
    }
    const uint8_t *data = (const uint8_t *)a.data.buf;
    const uint8_t *valid = a.has_valid ? (const uint8_t *)a.valid.buf : NULL;
    uint64_t *seeds = (uint64_t *)a.seeds.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (valid && !valid[i]) continue;
        seeds[i] = xxh64(data + i * width, (size_t)width, seeds[i]);
    }
    Py_END_ALLOW_THREADS
    release(&a);
    Py_RETURN_NONE;
fail:
    release(&a);
    return NULL;
}

static PyMethodDef methods[] = {
    {"hash_var", hash_var, METH_VARARGS, hash_var_doc},
    {"hash_fixed", hash_fixed, METH_VARARGS, hash_fixed_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_xxh64", "XXH64 over whole columns (see core/keys.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__xxh64(void) { return PyModule_Create(&module); }
