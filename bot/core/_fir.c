/* The polyphase FIR of bot/core/codec.py in C: the same integer taps, the same sums and the
 * same rounding, so the output is bit-identical to the numpy path (the tests compare them).
 *
 * numpy spends most of a 20-40 ms chunk on per-call overhead (a dozen array operations); this
 * does the arithmetic alone. Sums are exact in int64: |sample| <= 2^15, |tap| < 2^20, 84
 * taps, times 3 for the upsampler: below 2^45.
 *
 * State lives in a bytearray the caller owns: the history of int16 samples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RATIO 3
#define NTAPS 84
#define BRANCH (NTAPS / RATIO)       /* 28 taps per polyphase branch */
#define UP_HISTORY (BRANCH - 1)      /* 27 input samples at 8 kHz */
#define Q_BITS 20

static int64_t taps[NTAPS];
static int taps_set = 0;

/* round(acc / 2^20), halves to even (numpy's rint), clipped to int16 */
static inline int16_t to_int16(int64_t acc) {
    int64_t q = acc >> Q_BITS; /* floor */
    int64_t r = acc - (q << Q_BITS);
    const int64_t half = (int64_t)1 << (Q_BITS - 1);
    if (r > half || (r == half && (q & 1))) {
        q += 1;
    }
    if (q > 32767) {
        return 32767;
    }
    if (q < -32768) {
        return -32768;
    }
    return (int16_t)q;
}

/* AVX2 and FMA where the CPU has them, chosen at load time; results are the same either
 * way, since every product and partial sum is an exact integer. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static void up_kernel(const double *xd, double *acc, Py_ssize_t count) {
    for (int k = 0; k < RATIO; k++) {
        double *a = acc + k * count;
        for (Py_ssize_t i = 0; i < count; i++) {
            a[i] = 0.0;
        }
        for (int j = 0; j < BRANCH; j++) {
            const double c = (double)taps[RATIO * (BRANCH - 1 - j) + k];
            const double *xj = xd + j;
            for (Py_ssize_t i = 0; i < count; i++) {
                a[i] += xj[i] * c;
            }
        }
    }
}

VECTOR_CLONES
static void down_kernel(const double *phases, Py_ssize_t frames, double *acc, Py_ssize_t count) {
    for (Py_ssize_t n = 0; n < count; n++) {
        acc[n] = 0.0;
    }
    for (int j = 0; j < BRANCH; j++) {
        for (int r = 0; r < RATIO; r++) {
            const double c = (double)taps[RATIO * j + r];
            const double *p = phases + r * frames + j;
            for (Py_ssize_t n = 0; n < count; n++) {
                acc[n] += p[n] * c;
            }
        }
    }
}

static PyObject *set_taps(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) {
        return NULL;
    }
    if (view.len != NTAPS * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "84 int64 taps expected");
        return NULL;
    }
    memcpy(taps, view.buf, sizeof(taps));
    PyBuffer_Release(&view);
    taps_set = 1;
    Py_RETURN_NONE;
}

/* upsample(history: bytearray of 27 int16, pcm16_8k: bytes) -> bytes of 3x the samples */
static PyObject *upsample(PyObject *self, PyObject *args) {
    PyObject *history;
    Py_buffer input;
    if (!taps_set) {
        PyErr_SetString(PyExc_RuntimeError, "set_taps first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "Yy*", &history, &input)) {
        return NULL;
    }
    if (PyByteArray_GET_SIZE(history) != UP_HISTORY * 2 || input.len % 2) {
        PyBuffer_Release(&input);
        PyErr_SetString(PyExc_ValueError, "bad history or odd input");
        return NULL;
    }
    Py_ssize_t count = input.len / 2;
    Py_ssize_t total = UP_HISTORY + count;
    int16_t stack[UP_HISTORY + 4096];
    int16_t *x = total <= (Py_ssize_t)(sizeof(stack) / sizeof(stack[0]))
                     ? stack
                     : PyMem_Malloc(total * sizeof(int16_t));
    if (x == NULL) {
        PyBuffer_Release(&input);
        return PyErr_NoMemory();
    }
    memcpy(x, PyByteArray_AS_STRING(history), UP_HISTORY * 2);
    memcpy(x + UP_HISTORY, input.buf, input.len);
    PyBuffer_Release(&input);
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * RATIO * 2);
    double *work = PyMem_Malloc((total + RATIO * count) * sizeof(double));
    if (out != NULL && work != NULL) {
        int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
        double *xd = work, *acc = work + total;
        for (Py_ssize_t i = 0; i < total; i++) {
            xd[i] = x[i];
        }
        /* Output branch k of sample i is sum over j of x[i + j] * tap[3 (27 - j) + k]: tap
         * by tap over all samples, so the inner loop is contiguous and vectorizes. Every
         * product and sum is an integer below 2^53, so doubles are exact. */
        up_kernel(xd, acc, count);
        for (Py_ssize_t i = 0; i < count; i++) {
            for (int k = 0; k < RATIO; k++) {
                y[RATIO * i + k] = to_int16(RATIO * (int64_t)acc[k * count + i]);
            }
        }
        memcpy(PyByteArray_AS_STRING(history), x + count, UP_HISTORY * 2);
    } else if (out != NULL) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
    PyMem_Free(work);
    if (x != stack) {
        PyMem_Free(x);
    }
    return out;
}

/* downsample(history: bytearray of int16, pcm16_24k: bytes) -> bytes; the history keeps
 * the samples not yet used by a whole output (81 of filter history, at most 2 more). */
static PyObject *downsample(PyObject *self, PyObject *args) {
    PyObject *history;
    Py_buffer input;
    if (!taps_set) {
        PyErr_SetString(PyExc_RuntimeError, "set_taps first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "Yy*", &history, &input)) {
        return NULL;
    }
    Py_ssize_t held = PyByteArray_GET_SIZE(history);
    if (held % 2 || input.len % 2) {
        PyBuffer_Release(&input);
        PyErr_SetString(PyExc_ValueError, "odd history or input");
        return NULL;
    }
    held /= 2;
    Py_ssize_t total = held + input.len / 2;
    int16_t stack[4096];
    int16_t *x = total <= (Py_ssize_t)(sizeof(stack) / sizeof(stack[0]))
                     ? stack
                     : PyMem_Malloc(total * sizeof(int16_t));
    if (x == NULL) {
        PyBuffer_Release(&input);
        return PyErr_NoMemory();
    }
    memcpy(x, PyByteArray_AS_STRING(history), held * 2);
    memcpy(x + held, input.buf, input.len);
    PyBuffer_Release(&input);
    Py_ssize_t frames = total / RATIO;
    Py_ssize_t count = frames - BRANCH + 1;
    if (count < 0) {
        count = 0;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 2);
    double *work = PyMem_Malloc((RATIO * frames + count + 1) * sizeof(double));
    if (out != NULL && work != NULL) {
        int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
        /* Output n is sum over m of x[3n + m] * tap[m]; with m = 3j + r that is phase r of
         * the input (every third sample) shifted by j: contiguous, so it vectorizes. */
        double *phases = work, *acc = work + RATIO * frames;
        for (int r = 0; r < RATIO; r++) {
            for (Py_ssize_t f = 0; f < frames; f++) {
                phases[r * frames + f] = x[RATIO * f + r];
            }
        }
        down_kernel(phases, frames, acc, count);
        for (Py_ssize_t n = 0; n < count; n++) {
            y[n] = to_int16((int64_t)acc[n]);
        }
        Py_ssize_t keep = total - count * RATIO;
        if (PyByteArray_Resize(history, keep * 2) < 0) {
            Py_CLEAR(out);
        } else {
            memcpy(PyByteArray_AS_STRING(history), x + count * RATIO, keep * 2);
        }
    } else if (out != NULL) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
    PyMem_Free(work);
    if (x != stack) {
        PyMem_Free(x);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"set_taps", set_taps, METH_VARARGS, "The 84 filter taps, as int64 in Q20."},
    {"upsample", upsample, METH_VARARGS, "8 kHz -> 24 kHz PCM16, history updated in place."},
    {"downsample", downsample, METH_VARARGS, "24 kHz -> 8 kHz PCM16, history updated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fir", "The polyphase FIR of bot.core.codec, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fir(void) { return PyModule_Create(&module); }
