/* The polyphase FIR of bot/core/codec.py in C: the same integer taps, the same sums and the
 * same rounding, so the output is bit-identical to the numpy path (the tests compare them).
 *
 * numpy spends most of a 20-40 ms chunk on per-call overhead (a dozen array operations); this
 * does the arithmetic alone. Sums are exact in int64: |sample| <= 2^15, |tap| < 2^20, 84
 * taps, times 3 for the upsampler: below 2^45.
 *
 * State lives in a bytearray the caller owns: the history of int16 samples. Samples are
 * read and written in native byte order; the caller uses this only on little-endian CPUs.
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

/* Four doubles: one AVX2 register, or two SSE2 registers in the default clone. */
typedef double v4d __attribute__((vector_size(32)));

/* out[i] (+)= sum over j < BRANCH of x[i + j] * c[j], for i < count. Blocks of 16 outputs
 * are summed in four registers over all the taps, so partial sums stay out of memory. */
VECTOR_CLONES
static void fir(const double *x, const double *c, double *out, Py_ssize_t count, int add) {
    Py_ssize_t i = 0;
    for (; i + 16 <= count; i += 16) {
        v4d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, x0, x1, x2, x3;
        for (int j = 0; j < BRANCH; j++) {
            const double *p = x + i + j;
            const v4d cj = {c[j], c[j], c[j], c[j]};
            memcpy(&x0, p, sizeof x0); /* memcpy: unaligned loads */
            memcpy(&x1, p + 4, sizeof x1);
            memcpy(&x2, p + 8, sizeof x2);
            memcpy(&x3, p + 12, sizeof x3);
            s0 += x0 * cj;
            s1 += x1 * cj;
            s2 += x2 * cj;
            s3 += x3 * cj;
        }
        double block[16];
        memcpy(block, &s0, sizeof s0);
        memcpy(block + 4, &s1, sizeof s1);
        memcpy(block + 8, &s2, sizeof s2);
        memcpy(block + 12, &s3, sizeof s3);
        for (int t = 0; t < 16; t++) {
            out[i + t] = add ? out[i + t] + block[t] : block[t];
        }
    }
    for (; i < count; i++) {
        double s = 0.0;
        for (int j = 0; j < BRANCH; j++) {
            s += x[i + j] * c[j];
        }
        out[i] = add ? out[i] + s : s;
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

/* The arguments of both directions: (history: bytearray of int16, pcm16: bytes), both of
 * whole samples. 0, or -1 with an exception set. */
static int parse_args(PyObject *args, PyObject **history, Py_buffer *input) {
    if (!taps_set) {
        PyErr_SetString(PyExc_RuntimeError, "set_taps first");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "Yy*", history, input)) {
        return -1;
    }
    if (PyByteArray_GET_SIZE(*history) % 2 || input->len % 2) {
        PyBuffer_Release(input);
        PyErr_SetString(PyExc_ValueError, "odd history or input");
        return -1;
    }
    return 0;
}

/* The history then the input, as doubles, in a new buffer with room for `extra` more; the
 * input is released. NULL, with MemoryError set, if there is no memory. */
static double *load(PyObject *history, Py_buffer *input, Py_ssize_t extra) {
    Py_ssize_t held = PyByteArray_GET_SIZE(history) / 2;
    Py_ssize_t fresh = input->len / 2;
    double *x = PyMem_Malloc((held + fresh + extra) * sizeof(double));
    if (x != NULL) {
        const char *h = PyByteArray_AS_STRING(history);
        const char *in = input->buf;
        int16_t sample;
        for (Py_ssize_t i = 0; i < held; i++) {
            memcpy(&sample, h + 2 * i, 2); /* memcpy: the buffers need not be aligned */
            x[i] = sample;
        }
        for (Py_ssize_t i = 0; i < fresh; i++) {
            memcpy(&sample, in + 2 * i, 2);
            x[held + i] = sample;
        }
    } else {
        PyErr_NoMemory();
    }
    PyBuffer_Release(input);
    return x;
}

/* The last `keep` of the `total` samples become the history. 0, or -1 with an exception. */
static int keep_tail(PyObject *history, const double *x, Py_ssize_t total, Py_ssize_t keep) {
    if (PyByteArray_Resize(history, keep * 2) < 0) {
        return -1;
    }
    char *h = PyByteArray_AS_STRING(history);
    for (Py_ssize_t i = 0; i < keep; i++) {
        int16_t sample = (int16_t)x[total - keep + i];
        memcpy(h + 2 * i, &sample, 2);
    }
    return 0;
}

/* upsample(history: bytearray of 27 int16, pcm16_8k: bytes) -> bytes of 3x the samples */
static PyObject *upsample(PyObject *self, PyObject *args) {
    PyObject *history;
    Py_buffer input;
    if (parse_args(args, &history, &input) < 0) {
        return NULL;
    }
    if (PyByteArray_GET_SIZE(history) != UP_HISTORY * 2) {
        PyBuffer_Release(&input);
        PyErr_SetString(PyExc_ValueError, "the history holds 27 samples");
        return NULL;
    }
    Py_ssize_t count = input.len / 2;
    Py_ssize_t total = UP_HISTORY + count;
    double *x = load(history, &input, count);
    if (x == NULL) {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * RATIO * 2);
    if (out != NULL) {
        /* Output branch k of sample i is sum over j of x[i + j] * tap[3 (27 - j) + k]: tap
         * by tap over all samples, so the inner loop is contiguous and vectorizes. Every
         * product and sum is an integer below 2^53, so doubles are exact. */
        double *acc = x + total;
        int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
        for (int k = 0; k < RATIO; k++) {
            double c[BRANCH];
            for (int j = 0; j < BRANCH; j++) {
                c[j] = (double)taps[RATIO * (BRANCH - 1 - j) + k];
            }
            fir(x, c, acc, count, 0);
            for (Py_ssize_t i = 0; i < count; i++) {
                y[RATIO * i + k] = to_int16(RATIO * (int64_t)acc[i]);
            }
        }
        if (keep_tail(history, x, total, UP_HISTORY) < 0) {
            Py_CLEAR(out);
        }
    }
    PyMem_Free(x);
    return out;
}

/* downsample(history: bytearray of int16, pcm16_24k: bytes) -> bytes; the history keeps
 * the samples not yet used by a whole output (81 of filter history, at most 2 more). */
static PyObject *downsample(PyObject *self, PyObject *args) {
    PyObject *history;
    Py_buffer input;
    if (parse_args(args, &history, &input) < 0) {
        return NULL;
    }
    Py_ssize_t total = (PyByteArray_GET_SIZE(history) + input.len) / 2;
    Py_ssize_t frames = total / RATIO;
    Py_ssize_t count = frames - BRANCH + 1;
    if (count < 0) {
        count = 0;
    }
    double *x = load(history, &input, RATIO * frames + count);
    if (x == NULL) {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 2);
    if (out != NULL) {
        /* Output n is sum over m of x[3n + m] * tap[m]; with m = 3j + r that is phase r of
         * the input (every third sample) shifted by j: contiguous, so it vectorizes. */
        double *phases = x + total, *acc = phases + RATIO * frames;
        for (int r = 0; r < RATIO; r++) {
            for (Py_ssize_t f = 0; f < frames; f++) {
                phases[r * frames + f] = x[RATIO * f + r];
            }
        }
        for (int r = 0; r < RATIO; r++) {
            double c[BRANCH];
            for (int j = 0; j < BRANCH; j++) {
                c[j] = (double)taps[RATIO * j + r];
            }
            fir(phases + r * frames, c, acc, count, r > 0);
        }
        int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t n = 0; n < count; n++) {
            y[n] = to_int16((int64_t)acc[n]);
        }
        if (keep_tail(history, x, total, total - count * RATIO) < 0) {
            Py_CLEAR(out);
        }
    }
    PyMem_Free(x);
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
