/* The map step's per-line work for plain ASCII blocks, in one pass per block (optional).
 *
 * l4diag/native.py wraps this module; l4diag/fastmap.py uses it when it was built and falls back
 * to its numpy/Arrow path otherwise. Every function here computes exactly what that path
 * computes (tests/test_native.py compares them line by line):
 *
 *   count_clean_lines(block, max_line_bytes) -> n, or -1 when the block is not plain ASCII
 *       ending in a newline with no control byte and no empty, blank or over-long line (then
 *       fastmap._clean_parts decides)
 *   scan(block, node, table, zero_digit_x, pre_mask=False) -> (starts, skeleton ids, times, years, flags)
 *       starts:   int64[n + 1], line i is block[starts[i] : starts[i + 1] - 1]
 *       ids:      int32[n], the id in ``table`` of the line's skeleton: the line with every
 *                 occurrence of ``node`` replaced by "<NODE>" and every digit 1-9 turned into 0
 *                 (digits kept on lines with [1-9][xX] unless zero_digit_x)   [fastmap skeletons]
 *       times:    float64[n], the plain ISO leading timestamp, NaN elsewhere   [fastmap.BulkTimes]
 *       years:    int32[n], the year of lines with the plain ISO layout (valid date or not)
 *       flags:    uint8[n], ISO | HARD (TimestampParser must look) | LITERAL_NODE | PRE_MASKED
 *   SkeletonTable(): skeleton text -> dense id; ``skeletons`` lists them by id; clear(); len().
 *
 * With pre_mask, scan also applies the two first mask rules of patterns/masks.toml itself (fastmap
 * passes it only while they are exactly these), before zeroing digits:
 *   uuid  \b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b -> <UUID>
 *   hex   \b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b -> <HEX>
 * so that lines differing only in an id share a skeleton (and are masked once, not once each).
 * Both can only match from the start of a word (\b before a word character) and end at a word's
 * end, so one left-to-right pass over the words, trying uuid first, gives what re.sub gives rule
 * after rule (a uuid starts before any word inside it; the replacements keep the non-word
 * characters around them, so no new match appears).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#define USE_SSE2 1
#endif

#define FLAG_ISO 1
#define FLAG_HARD 2
#define FLAG_LITERAL_NODE 4
#define FLAG_PRE_MASKED 8 /* a uuid or hex id was replaced in the skeleton */

/* ------------------------------------------------------------------------------------------ */
/* skeleton table: open addressing on a 64-bit hash, verified against the stored text */

/* hash and id side by side: a probe touches one cache line, not one in each of two arrays */
typedef struct {
    uint64_t hash;
    int32_t id; /* -1: empty */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t cap;  /* power of two */
    PyObject *skeletons; /* list of str, by id */
} Table;

/* The skeleton hash: 16-byte chunks, taken in turn by two pairs of independent multiply chains (one
 * chain of dependent multiplies was the hash's whole cost). A text of 16 bytes or more ends with
 * its last 16 bytes (overlapping the chunk before, so that SIMD code needs no partial load); a
 * shorter one is one zero-padded chunk. The length, mixed in at the end, keeps "a" and "a\0" apart.
 * zero_and_hash computes the same value. */
typedef struct {
    uint64_t a, b, c, d;
} HashState;

#define HASH_START {0x9E3779B97F4A7C15ULL, 0xD6E8FEB86659FD93ULL, 0x94D049BB133111EBULL, 0xBF58476D1CE4E5B9ULL}

static inline uint64_t mix(uint64_t h, uint64_t w, uint64_t k, int shift) {
    h = (h ^ w) * k;
    return h ^ (h >> shift);
}

static inline void hash_even(HashState *s, uint64_t w0, uint64_t w1) {
    s->a = mix(s->a, w0, 0xFF51AFD7ED558CCDULL, 32);
    s->b = mix(s->b, w1, 0xC4CEB9FE1A85EC53ULL, 29);
}

static inline void hash_odd(HashState *s, uint64_t w0, uint64_t w1) {
    s->c = mix(s->c, w0, 0xFF51AFD7ED558CCDULL, 29);
    s->d = mix(s->d, w1, 0xC4CEB9FE1A85EC53ULL, 32);
}

static inline uint64_t hash_finish(const HashState *s, Py_ssize_t n) {
    uint64_t h = s->a ^ (s->b * 0x9FB21C651E98DF25ULL) ^ (s->c * 0xD6E8FEB86659FD93ULL) ^ (s->d * 0xFF51AFD7ED558CCDULL);
    h ^= (uint64_t)n;
    h ^= h >> 32;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 29;
    return h;
}

static inline uint64_t word_at(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* where the chunk that starts at i is read: a last, partial one ends at the text's end */
static inline Py_ssize_t chunk_start(Py_ssize_t i, Py_ssize_t n) { return i + 16 <= n ? i : n - 16; }

static uint64_t hash_bytes(const unsigned char *p, Py_ssize_t n) {
    HashState s = HASH_START;
    if (n < 16) {
        unsigned char tail[16] = {0};
        memcpy(tail, p, (size_t)n);
        hash_even(&s, word_at(tail), word_at(tail + 8));
        return hash_finish(&s, n);
    }
    for (Py_ssize_t i = 0;; i += 32) {
        const unsigned char *q = p + chunk_start(i, n);
        hash_even(&s, word_at(q), word_at(q + 8));
        if (i + 16 >= n) break;
        q = p + chunk_start(i + 16, n);
        hash_odd(&s, word_at(q), word_at(q + 8));
        if (i + 32 >= n) break;
    }
    return hash_finish(&s, n);
}

static int table_alloc(Table *t, Py_ssize_t cap) {
    Slot *slots = PyMem_Malloc((size_t)cap * sizeof(Slot));
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < cap; i++) slots[i] = (Slot){0, -1};
    PyMem_Free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static int table_grow(Table *t) {
    Slot *old = t->slots;
    Py_ssize_t old_cap = t->cap;
    t->slots = NULL;
    if (table_alloc(t, old_cap * 2) < 0) {
        t->slots = old;
        t->cap = old_cap;
        return -1;
    }
    Py_ssize_t mask = t->cap - 1;
    for (Py_ssize_t i = 0; i < old_cap; i++) {
        if (old[i].id < 0) continue;
        Py_ssize_t j = (Py_ssize_t)(old[i].hash & (uint64_t)mask);
        while (t->slots[j].id >= 0) j = (j + 1) & mask;
        t->slots[j] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

/* the id of a skeleton whose hash_bytes is h, adding it when new; -1 on error */
static int32_t table_id(Table *t, const unsigned char *p, Py_ssize_t n, uint64_t h) {
    Py_ssize_t mask = t->cap - 1;
    Py_ssize_t j = (Py_ssize_t)(h & (uint64_t)mask);
    for (;;) {
        int32_t id = t->slots[j].id;
        if (id < 0) break;
        if (t->slots[j].hash == h) {
            PyObject *s = PyList_GET_ITEM(t->skeletons, id);
            if (PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_1BYTE_DATA(s), p, (size_t)n) == 0) return id;
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t size = PyList_GET_SIZE(t->skeletons);
    if (size >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many skeletons");
        return -1;
    }
    PyObject *s = PyUnicode_DecodeASCII((const char *)p, n, "strict");
    if (!s) return -1;
    if (PyList_Append(t->skeletons, s) < 0) {
        Py_DECREF(s);
        return -1;
    }
    Py_DECREF(s);
    t->slots[j] = (Slot){h, (int32_t)size};
    if ((size + 1) * 2 > t->cap && table_grow(t) < 0) return -1;
    return (int32_t)size;
}

static PyObject *Table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Table *t = (Table *)type->tp_alloc(type, 0);
    if (!t) return NULL;
    t->skeletons = PyList_New(0);
    if (!t->skeletons || table_alloc(t, 1024) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void Table_dealloc(Table *t) {
    PyMem_Free(t->slots);
    Py_XDECREF(t->skeletons);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *Table_clear(Table *t, PyObject *unused) {
    PyObject *fresh = PyList_New(0);
    if (!fresh) return NULL;
    if (table_alloc(t, 1024) < 0) {
        Py_DECREF(fresh);
        return NULL;
    }
    Py_SETREF(t->skeletons, fresh);
    Py_RETURN_NONE;
}

static Py_ssize_t Table_len(Table *t) { return PyList_GET_SIZE(t->skeletons); }

static PyObject *Table_get_skeletons(Table *t, void *closure) { return Py_NewRef(t->skeletons); }

static PyMethodDef Table_methods[] = {
    {"clear", (PyCFunction)Table_clear, METH_NOARGS, "Forget every skeleton (ids start again at 0)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Table_getset[] = {
    {"skeletons", (getter)Table_get_skeletons, NULL, "The skeletons by id (a list; do not modify).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Table_as_sequence = {.sq_length = (lenfunc)Table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_l4diag_native.SkeletonTable",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Skeleton texts to dense ids.",
    .tp_new = Table_new,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
    .tp_as_sequence = &Table_as_sequence,
};

/* ------------------------------------------------------------------------------------------ */
/* plain blocks */

/* count_clean_lines' tests of one line: empty or blank, or too long */
static int bad_line(const unsigned char *L, Py_ssize_t len, Py_ssize_t max_line_bytes) {
    Py_ssize_t lead = 0;
    while (lead < len && (L[lead] == ' ' || L[lead] == '\t')) lead++;
    return lead == len || len * 4 > max_line_bytes;
}

#ifdef USE_SSE2
/* count_clean_lines over p[:n] (n a multiple of 32) in one pass, as no per-line memchr needs: the
 * odd bytes tested 16 at a time, each newline from a 32-byte step's newline mask. Returns where the
 * first line not ended in p[:n] starts. */
static inline __m128i odd_bytes(__m128i c, __m128i newline) {
    /* signed: bytes >= 128 are below 32 too */
    __m128i control = _mm_andnot_si128(_mm_or_si128(newline, _mm_cmpeq_epi8(c, _mm_set1_epi8('\t'))),
                                       _mm_cmplt_epi8(c, _mm_set1_epi8(32)));
    return _mm_or_si128(control, _mm_cmpeq_epi8(c, _mm_set1_epi8(127)));
}

static Py_ssize_t clean_lines_sse2(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_line_bytes, Py_ssize_t *lines,
                                   int *bad) {
    __m128i odd = _mm_setzero_si128();
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < n && !*bad; i += 32) {
        __m128i c0 = _mm_loadu_si128((const __m128i *)(p + i)), c1 = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i newline0 = _mm_cmpeq_epi8(c0, _mm_set1_epi8('\n')), newline1 = _mm_cmpeq_epi8(c1, _mm_set1_epi8('\n'));
        odd = _mm_or_si128(odd, _mm_or_si128(odd_bytes(c0, newline0), odd_bytes(c1, newline1)));
        uint32_t m = (uint32_t)_mm_movemask_epi8(newline0) | (uint32_t)_mm_movemask_epi8(newline1) << 16;
        for (; m; m &= m - 1) {
            Py_ssize_t end = i + __builtin_ctz(m);
            *bad |= bad_line(p + start, end - start, max_line_bytes);
            ++*lines;
            start = end + 1;
        }
    }
    *bad |= _mm_movemask_epi8(odd) != 0;
    return start;
}
#endif

static PyObject *count_clean_lines(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t max_line_bytes;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &max_line_bytes)) return NULL;
    const unsigned char *p = buf.buf;
    Py_ssize_t n = buf.len, lines = 0, pos = 0;
    int bad = n == 0 || p[n - 1] != '\n';
#ifdef USE_SSE2
    if (!bad) pos = clean_lines_sse2(p, n & ~(Py_ssize_t)31, max_line_bytes, &lines, &bad);
#endif
    while (!bad && pos < n) {
        const unsigned char *L = p + pos;
        Py_ssize_t len = (const unsigned char *)memchr(L, '\n', (size_t)(n - pos)) - L;
        bad = bad_line(L, len, max_line_bytes);
        unsigned char acc = 0;
        for (Py_ssize_t j = 0; j < len; j++) /* no early exit: vectorised */
            acc |= (unsigned char)(((L[j] < 32) & (L[j] != '\t')) | (L[j] >= 127));
        bad |= acc;
        lines++;
        pos += len + 1;
    }
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(bad ? -1 : lines);
}

/* the lines of a block: its newlines, plus a last line without one */
static Py_ssize_t count_lines(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t lines = 0, i = 0;
#ifdef USE_SSE2
    /* per-byte counts in 8-bit lanes (4 a step), summed into 64-bit ones before they can wrap */
    __m128i total = _mm_setzero_si128();
    const __m128i newline = _mm_set1_epi8('\n');
    while (i + 64 <= n) {
        __m128i counts = _mm_setzero_si128();
        for (int k = 0; k < 255 / 4 && i + 64 <= n; k++, i += 64)
            for (int c = 0; c < 64; c += 16)
                counts = _mm_sub_epi8(counts, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + c)), newline));
        total = _mm_add_epi64(total, _mm_sad_epu8(counts, _mm_setzero_si128()));
    }
    lines = (Py_ssize_t)_mm_cvtsi128_si64(total) + (Py_ssize_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(total, total));
#endif
    for (const unsigned char *q = p + i; (q = memchr(q, '\n', (size_t)(p + n - q))) != NULL; q++) lines++;
    if (n > 0 && p[n - 1] != '\n') lines++;
    return lines;
}

/* ------------------------------------------------------------------------------------------ */
/* timestamps: fastmap.BulkTimes' column tests, one line at a time */

static unsigned char FIRST_OK[256], LETTER[256], GLOG[256];

static int64_t days_from_civil(int64_t y, int64_t m) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static const char *MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const int ISO_DIGITS[] = {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18};

#define ISDIGIT(c) ((unsigned char)((c) - '0') < 10)

/* memmem for the short needles here: memchr (SIMD in libc) finds candidates for the first byte;
 * on ~100-byte lines it is several times faster than glibc's general memmem */
static const unsigned char *find(const unsigned char *h, Py_ssize_t hn, const unsigned char *nd, Py_ssize_t nn) {
    if (nn <= 0 || hn < nn) return NULL;
    const unsigned char *end = h + hn - nn + 1; /* the last place a match can start, plus one */
    while (h < end) {
        const unsigned char *c = memchr(h, nd[0], (size_t)(end - h));
        if (!c) return NULL;
        if (memcmp(c + 1, nd + 1, (size_t)(nn - 1)) == 0) return c;
        h = c + 1;
    }
    return NULL;
}

#define TIME_WINDOW 32 /* line_time reads no byte past this */

static void line_time(const unsigned char *L, Py_ssize_t len, int colon_bracket, double *out, int32_t *year, uint8_t *flags) {
    /* bytes past the line end read as its newline, as the numpy window over the block does: a short
     * line is read from a padded copy, so that no read needs a bounds test */
    unsigned char padded[TIME_WINDOW];
    if (len < TIME_WINDOW) {
        memcpy(padded, L, (size_t)len);
        memset(padded + len, '\n', (size_t)(TIME_WINDOW - len));
        L = padded;
    }
#define AT(k) (L[k])
    unsigned char first = AT(0);
    int off = (first == '[' || first == '(') ? 1 : 0;
#define S(k) AT((k) + off)
    int first_ok = FIRST_OK[first];
    int iso = first_ok;
    for (int k = 0; iso && k < 14; k++) iso = ISDIGIT(S(ISO_DIGITS[k]));
    iso = iso && S(4) == '-' && S(7) == '-' && S(13) == ':' && S(16) == ':' &&
          (S(10) == 'T' || S(10) == ' ' || S(10) == '_');
    int maybe = first_ok && !iso;
    if (LETTER[first]) {
        int glog_like = GLOG[first] && ISDIGIT(AT(1));
        int month_like = 0;
        for (int m = 0; m < 12 && !month_like; m++)
            month_like = AT(0) == (unsigned char)MONTHS[m][0] && AT(1) == (unsigned char)MONTHS[m][1] &&
                         AT(2) == (unsigned char)MONTHS[m][2];
        month_like = month_like && AT(3) == ' ';
        maybe = maybe && (glog_like || month_like);
    }
    if (colon_bracket) {
        maybe = maybe || first_ok;
        iso = 0;
    }
    *out = NAN;
    *year = 0;
    if (iso) {
#define D(k) ((int64_t)(S(k) - '0'))
        int64_t y = D(0) * 1000 + D(1) * 100 + D(2) * 10 + D(3);
        int64_t mo = D(5) * 10 + D(6), d = D(8) * 10 + D(9), h = D(11) * 10 + D(12);
        int64_t mi = D(14) * 10 + D(15), sec = D(17) * 10 + D(18);
        *year = (int32_t)y;
        unsigned char sep = S(19);
        int flen = 0;
        int64_t fval = 0;
        if (sep == '.' || sep == ',') {
            while (flen < 6 && ISDIGIT(S(20 + flen))) {
                fval = fval * 10 + D(20 + flen);
                flen++;
            }
        }
        if (y >= 1970 && y <= 2200 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24) {
            int64_t days = days_from_civil(y, mo) + d - 1;
            double base = (double)(((days * 24 + h) * 60 + mi) * 60 + sec);
            static const double POW10[] = {1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6};
            double frac = flen > 0 ? (double)fval / POW10[flen] : 0.0;
            *out = base + frac;
        }
#undef D
    }
    *flags = (uint8_t)((iso ? FLAG_ISO : 0) | (maybe ? FLAG_HARD : 0));
#undef S
#undef AT
}

/* ------------------------------------------------------------------------------------------ */
/* the uuid and hex rules */

static unsigned char WORD[256], HEX[256]; /* WORD: 0 not a word character, 1 one, 3 a hex one (one load tells both) */

static int all_hex(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++)
        if (!HEX[p[k]]) return 0;
    return 1;
}

/* the uuid rule at a word start i (its first 8 characters) */
static int uuid_at(const unsigned char *in, Py_ssize_t n, Py_ssize_t i) {
    static const int groups[5][2] = {{0, 8}, {9, 4}, {14, 4}, {19, 4}, {24, 12}};
    if (i + 36 > n) return 0;
    for (int g = 0; g < 5; g++) {
        if (g > 0 && in[i + groups[g][0] - 1] != '-') return 0;
        if (!all_hex(in + i + groups[g][0], groups[g][1])) return 0;
    }
    return i + 36 == n || !WORD[in[i + 36]];
}

/* Whether a line could hold a uuid or hex id: "0x", dashes 5 apart twice (a uuid's 4-character
 * groups), or a run of 8 hex characters that has a digit next to a letter a-f somewhere in the line
 * (a hex id of 8+ has both, next to each other). A superset of what pre_mask changes, on the line
 * before the node is replaced ("<NODE>" cannot be part of an id); pre_mask itself decides. */
static int digit_next_to_letter(const unsigned char *L, Py_ssize_t len) {
    unsigned char adjacent = 0;
    for (Py_ssize_t j = 0; j + 1 < len; j++) { /* no early exit: vectorised */
        unsigned char a = L[j], b = L[j + 1];
        unsigned char da = (unsigned char)(a - '0') < 10, db = (unsigned char)(b - '0') < 10;
        unsigned char la = (unsigned char)((a | 0x20) - 'a') < 6, lb = (unsigned char)((b | 0x20) - 'a') < 6;
        adjacent |= (unsigned char)((da & lb) | (la & db));
    }
    return adjacent;
}

static int may_hold_id(const unsigned char *L, Py_ssize_t len) {
    unsigned char zero_x = 0;
    for (Py_ssize_t j = 0; j + 1 < len; j++) zero_x |= (unsigned char)((L[j] == '0') & (L[j + 1] == 'x'));
    unsigned char dashes = 0;
    for (Py_ssize_t j = 0; j + 10 < len; j++)
        dashes |= (unsigned char)((L[j] == '-') & (L[j + 5] == '-') & (L[j + 10] == '-'));
    if (zero_x | dashes) return 1;
    for (Py_ssize_t j = 0, run = 0; j < len; j++) {
        run = HEX[L[j]] ? run + 1 : 0;
        if (run >= 8) return digit_next_to_letter(L, len);
    }
    return 0;
}

/* ``in`` with uuid and hex ids replaced, into ``out`` (room for 2 * n bytes); returns its length,
 * or -1 when nothing was replaced (``out`` is then not written). No id starts before ``from``. */
static Py_ssize_t pre_mask(const unsigned char *in, Py_ssize_t n, Py_ssize_t from, unsigned char *out) {
    Py_ssize_t i = from, o = 0, copied = 0; /* in[copied:] is not in out yet */
    while (i > 0 && WORD[in[i - 1]]) i--; /* the start of the word at from */
    int changed = 0;
    while (i < n) {
        while (i < n && !WORD[in[i]]) i++;
        Py_ssize_t w = i; /* a word starts: the character before it, if any, is not a word one */
        int hex = 1;
        for (unsigned char c; i < n && (c = WORD[in[i]]) != 0; i++) hex &= c >> 1;
        Py_ssize_t len = i - w, end = i;
        const char *token = NULL;
        if (len == 8 && hex && uuid_at(in, n, w)) {
            token = "<UUID>";
            end = w + 36;
        } else if (len >= 3 && in[w] == '0' && in[w + 1] == 'x' && all_hex(in + w + 2, len - 2)) {
            token = "<HEX>";
        } else if (len >= 8 && hex) {
            int digit = 0, letter = 0;
            for (Py_ssize_t k = w; k < i; k++) {
                digit |= ISDIGIT(in[k]);
                letter |= !ISDIGIT(in[k]);
            }
            if (digit && letter) token = "<HEX>";
        }
        if (token) {
            memcpy(out + o, in + copied, (size_t)(w - copied));
            o += w - copied;
            size_t tl = strlen(token);
            memcpy(out + o, token, tl);
            o += (Py_ssize_t)tl;
            copied = i = end;
            changed = 1;
        }
    }
    if (!changed) return -1;
    memcpy(out + o, in + copied, (size_t)(n - copied));
    return o + n - copied;
}

/* ------------------------------------------------------------------------------------------ */
/* scan */

#define HAS_DIGIT_X 1   /* [1-9][xX] */
#define HAS_COLON_BRACKET 2 /* ]:[ */
#define HAS_LT 4 /* <, as in a literal <NODE> */
#define HAS_NODE_START 8 /* the node's first two bytes */
#define MAY_HOLD_ID 16 /* see may_hold_id */

/* which of the HAS_ bits a line has: one pass, no early exit, so that it is vectorised */
static unsigned char line_bits(const unsigned char *L, Py_ssize_t len, unsigned char n0, unsigned char n1) {
    unsigned char acc = 0;
    if (len >= 2) acc |= (unsigned char)(((L[0] == n0) & (L[1] == n1)) << 3);
    for (Py_ssize_t j = 1; j + 1 < len; j++)
        acc |= (unsigned char)((((L[j] | 0x20) == 'x') & ((unsigned char)(L[j - 1] - '1') < 9)) |
                               (((L[j - 1] == ']') & (L[j] == ':') & (L[j + 1] == '[')) << 1) | ((L[j] == '<') << 2) |
                               (((L[j] == n0) & (L[j + 1] == n1)) << 3));
    if (len >= 2) {
        unsigned char a = L[len - 2], b = L[len - 1];
        acc |= (unsigned char)((((b | 0x20) == 'x') & ((unsigned char)(a - '1') < 9)) | ((b == '<') << 2));
    }
    if (len >= 1) acc |= (unsigned char)((L[0] == '<') << 2);
    return acc;
}

#ifdef USE_SSE2
#define SPLAT(c) _mm_set1_epi8((char)(c))
#define EQ(v, c) _mm_cmpeq_epi8((v), SPLAT(c))
#define TAG(cond, bit) _mm_and_si128((cond), SPLAT(bit))

/* What line_bits_sse2 sees in the 16 bytes at q: the HAS_ bits (and MAY_HOLD_ID for "0x" and the
 * dashes) of each byte, where "0x" starts, and the hex characters and newlines as masks */
typedef struct {
    __m128i bits, zero_x;
    uint32_t hex, newlines;
} Chunk;

static inline Chunk chunk_bits(const unsigned char *q, __m128i n0, __m128i n1) {
    Chunk k;
    __m128i c = _mm_loadu_si128((const __m128i *)q), before = _mm_loadu_si128((const __m128i *)(q - 1)),
            after = _mm_loadu_si128((const __m128i *)(q + 1));
    __m128i lower = _mm_or_si128(c, SPLAT(0x20));
    /* signed compares: bytes >= 128 are below every bound here */
    __m128i nonzero_digit_before = _mm_and_si128(_mm_cmpgt_epi8(before, SPLAT('0')), _mm_cmplt_epi8(before, SPLAT('9' + 1)));
    __m128i v = TAG(_mm_and_si128(nonzero_digit_before, EQ(lower, 'x')), HAS_DIGIT_X);
    v = _mm_or_si128(v, TAG(_mm_and_si128(EQ(before, ']'), _mm_and_si128(EQ(c, ':'), EQ(after, '['))), HAS_COLON_BRACKET));
    v = _mm_or_si128(v, TAG(EQ(c, '<'), HAS_LT));
    v = _mm_or_si128(v, TAG(_mm_and_si128(_mm_cmpeq_epi8(c, n0), _mm_cmpeq_epi8(after, n1)), HAS_NODE_START));
    __m128i dashes = _mm_and_si128(EQ(c, '-'), _mm_and_si128(EQ(_mm_loadu_si128((const __m128i *)(q + 5)), '-'),
                                                              EQ(_mm_loadu_si128((const __m128i *)(q + 10)), '-')));
    k.zero_x = _mm_and_si128(EQ(c, '0'), EQ(after, 'x'));
    k.bits = _mm_or_si128(v, TAG(_mm_or_si128(k.zero_x, dashes), MAY_HOLD_ID));
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(c, SPLAT('0' - 1)), _mm_cmplt_epi8(c, SPLAT('9' + 1)));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(lower, SPLAT('a' - 1)), _mm_cmplt_epi8(lower, SPLAT('f' + 1)));
    k.hex = (uint32_t)_mm_movemask_epi8(_mm_or_si128(digit, letter));
    k.newlines = (uint32_t)_mm_movemask_epi8(EQ(c, '\n'));
    return k;
}

/* The line at L: its length, and line_bits | (may_hold_id ? MAY_HOLD_ID : 0) in one pass of
 * 32-byte steps that also finds the newline (the scalar path takes three passes over the line).
 * Reads from L - 1 (the previous line's newline: the caller passes no block's first line) to 41
 * bytes past a step's start; -1 when that would pass `end` before the line ends (the scalar path
 * then takes the line). The dash test may look past the line's end: a needless pre_mask call, never
 * a different skeleton.
 *
 * id_from: where the first run of 8 hex characters or "0x" starts (the line's length if none); no
 * id starts before it (a uuid and a hex word start with such a run, the other hex form with "0x").
 * A run is seen in the first step whose window (it and the step before) holds all its 8 bytes, so
 * the first run seen is the earliest. */
static int line_bits_sse2(const unsigned char *L, const unsigned char *end, unsigned char node0, unsigned char node1,
                          Py_ssize_t *len, Py_ssize_t *id_from) {
    const __m128i positions = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m128i n0 = SPLAT(node0), n1 = SPLAT(node1);
    __m128i acc = _mm_setzero_si128();
    uint64_t hex_before = 0; /* the previous step's, below the current one's */
    int run8 = 0;
    Py_ssize_t first = PY_SSIZE_T_MAX; /* the first 8-hex run or "0x" */
    for (Py_ssize_t j = 0;; j += 32) {
        if (end - (L + j) < 42) return -1;
        Chunk a = chunk_bits(L + j, n0, n1), b = chunk_bits(L + j + 16, n0, n1);
        uint32_t newlines = a.newlines | b.newlines << 16, valid = 0xFFFFFFFFu;
        int stop = 32;
        if (newlines) { /* the last step: what follows the newline is the next line's */
            stop = __builtin_ctz(newlines);
            valid = (1u << stop) - 1;
            a.bits = _mm_and_si128(a.bits, _mm_cmplt_epi8(positions, SPLAT(stop)));
            b.bits = _mm_and_si128(b.bits, _mm_cmplt_epi8(positions, SPLAT(stop - 16)));
        }
        acc = _mm_or_si128(acc, _mm_or_si128(a.bits, b.bits));
        uint64_t hex = (uint64_t)((a.hex | b.hex << 16) & valid);
        uint64_t run = hex << 32 | hex_before; /* bit i: a run of hex characters from i on, 2, 4, then 8 long */
        run &= run >> 1;
        run &= run >> 2;
        run &= run >> 4;
        run8 |= run != 0;
        if (run && first == PY_SSIZE_T_MAX) first = j - 32 + __builtin_ctzll(run); /* the earliest: see above */
        uint32_t zero_xs = ((uint32_t)_mm_movemask_epi8(a.zero_x) | (uint32_t)_mm_movemask_epi8(b.zero_x) << 16) & valid;
        if (zero_xs && j + __builtin_ctz(zero_xs) < first) first = j + __builtin_ctz(zero_xs);
        hex_before = hex;
        if (newlines) {
            *len = j + stop;
            break;
        }
    }
    acc = _mm_or_si128(acc, _mm_srli_si128(acc, 8));
    acc = _mm_or_si128(acc, _mm_srli_si128(acc, 4));
    acc = _mm_or_si128(acc, _mm_srli_si128(acc, 2));
    acc = _mm_or_si128(acc, _mm_srli_si128(acc, 1));
    int bits = _mm_cvtsi128_si32(acc) & 0xff;
    *id_from = first < *len ? first : *len;
    /* a run of 8 is rarer than a digit next to a letter, and cheaper to look for 16 bytes at a time */
    return bits | (run8 && !(bits & MAY_HOLD_ID) && digit_next_to_letter(L + first, *len - first) ? MAY_HOLD_ID : 0);
}
#endif

static inline unsigned char zero_digit(unsigned char c) { return (unsigned char)(c - '1') < 9 ? '0' : c; }

#ifdef USE_SSE2
/* out[at:at + 16] = in[at:at + 16] with every digit 1-9 turned into 0; returns it */
static inline __m128i zero_chunk(unsigned char *out, const unsigned char *in, Py_ssize_t at) {
    __m128i c = _mm_loadu_si128((const __m128i *)(in + at));
    /* signed compares: bytes >= 128 are not digits */
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(c, _mm_set1_epi8('0')), _mm_cmplt_epi8(c, _mm_set1_epi8('9' + 1)));
    c = _mm_or_si128(_mm_andnot_si128(digit, c), _mm_and_si128(digit, _mm_set1_epi8('0')));
    _mm_storeu_si128((__m128i *)(out + at), c);
    return c;
}
#endif

/* out[:n] = in[:n] with every digit 1-9 turned into 0 (out may be in), and the hash_bytes of out:
 * one pass, so a line that needs nothing else is not first copied, then hashed */
static uint64_t zero_and_hash(unsigned char *out, const unsigned char *in, Py_ssize_t n) {
#ifdef USE_SSE2
    if (n >= 16) {
        HashState s = HASH_START;
        for (Py_ssize_t i = 0;; i += 32) {
            __m128i c = zero_chunk(out, in, chunk_start(i, n)); /* zeroing an overlap twice is harmless */
            hash_even(&s, (uint64_t)_mm_cvtsi128_si64(c), (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(c, c)));
            if (i + 16 >= n) break;
            c = zero_chunk(out, in, chunk_start(i + 16, n));
            hash_odd(&s, (uint64_t)_mm_cvtsi128_si64(c), (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(c, c)));
            if (i + 32 >= n) break;
        }
        return hash_finish(&s, n);
    }
#endif
    for (Py_ssize_t k = 0; k < n; k++) out[k] = zero_digit(in[k]);
    return hash_bytes(out, n);
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *node_obj, *table_obj;
    int zero_digit_x, do_pre_mask = 0;
    if (!PyArg_ParseTuple(args, "y*OO!p|p", &buf, &node_obj, &TableType, &table_obj, &zero_digit_x, &do_pre_mask))
        return NULL;
    Table *table = (Table *)table_obj;
    const unsigned char *p = buf.buf, *node = NULL;
    Py_ssize_t n = buf.len, node_len = 0;
    PyObject *result = NULL, *starts = NULL, *ids = NULL, *times = NULL, *years = NULL, *flags = NULL;
    unsigned char *scratch = NULL;
    if (node_obj != Py_None) {
        if (!PyBytes_Check(node_obj)) {
            PyErr_SetString(PyExc_TypeError, "node must be bytes or None");
            goto done;
        }
        node = (const unsigned char *)PyBytes_AS_STRING(node_obj);
        node_len = PyBytes_GET_SIZE(node_obj);
        if (node_len == 0) node = NULL;
    }
    Py_ssize_t lines = count_lines(p, n);
    starts = PyBytes_FromStringAndSize(NULL, (lines + 1) * 8);
    ids = PyBytes_FromStringAndSize(NULL, lines * 4);
    times = PyBytes_FromStringAndSize(NULL, lines * 8);
    years = PyBytes_FromStringAndSize(NULL, lines * 4);
    flags = PyBytes_FromStringAndSize(NULL, lines);
    if (!starts || !ids || !times || !years || !flags) goto done;
    int64_t *st = (int64_t *)PyBytes_AS_STRING(starts);
    int32_t *id = (int32_t *)PyBytes_AS_STRING(ids);
    double *tm = (double *)PyBytes_AS_STRING(times);
    int32_t *yr = (int32_t *)PyBytes_AS_STRING(years);
    uint8_t *fl = (uint8_t *)PyBytes_AS_STRING(flags);
    Py_ssize_t scratch_cap = 4096;
    scratch = PyMem_Malloc((size_t)scratch_cap);
    if (!scratch) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char n0 = node ? node[0] : 0, n1 = node ? node[1] : 0;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < lines; i++) {
        const unsigned char *L = p + pos;
        Py_ssize_t len = 0;
        Py_ssize_t id_from = 0;
        int bits = -1;
#ifdef USE_SSE2
        if (pos > 0) bits = line_bits_sse2(L, p + n, n0, n1, &len, &id_from);
#endif
        if (bits < 0) {
            const unsigned char *nl = memchr(L, '\n', (size_t)(n - pos));
            len = nl ? nl - L : n - pos;
            bits = line_bits(L, len, n0, n1) | (do_pre_mask && may_hold_id(L, len) ? MAY_HOLD_ID : 0);
        }
        st[i] = pos;
        pos += len + 1;
        if (node && node_len < 2) bits |= HAS_NODE_START; /* no pair to look for: search every line */
        line_time(L, len, bits & HAS_COLON_BRACKET, &tm[i], &yr[i], &fl[i]);
        if ((bits & HAS_LT) && find(L, len, (const unsigned char *)"<NODE>", 6) != NULL) fl[i] |= FLAG_LITERAL_NODE;
        /* two areas: the line with the node replaced ("<NODE>" for a node of n bytes: at most 2x the
         * line for n >= 3, 6x for n = 1), then pre_mask's output (at most 2x its input: "0x1" ->
         * "<HEX>") */
        Py_ssize_t area = len * (node && node_len < 3 ? 12 : 4) + 16;
        Py_ssize_t need = 2 * area;
        if (need > scratch_cap) {
            unsigned char *bigger = PyMem_Realloc(scratch, (size_t)need);
            if (!bigger) {
                PyErr_NoMemory();
                goto done;
            }
            scratch = bigger;
            scratch_cap = need;
        }
        /* the node replaced, then the ids masked, then the digits zeroed (pre_mask reads the ids'
         * own digits); each step works on the previous one's output, the line itself while nothing
         * has changed */
        const unsigned char *skeleton = L;
        Py_ssize_t k = len;
        const unsigned char *hit = (bits & HAS_NODE_START) ? find(L, len, node, node_len) : NULL;
        /* id_from, moved along with the text by the replacements before it: an id in the skeleton is
         * one in the line, moved so ("<NODE>" is no part of one); 0 when a node covers id_from */
        Py_ssize_t skeleton_id_from = id_from;
        if (hit) {
            Py_ssize_t j = 0;
            k = 0;
            while (hit) {
                Py_ssize_t at = hit - L;
                if (at + node_len <= id_from)
                    skeleton_id_from += 6 - node_len;
                else if (at < id_from)
                    skeleton_id_from = 0;
                memcpy(scratch + k, L + j, (size_t)(at - j));
                k += at - j;
                memcpy(scratch + k, "<NODE>", 6);
                k += 6;
                j = at + node_len;
                hit = find(L + j, len - j, node, node_len);
            }
            memcpy(scratch + k, L + j, (size_t)(len - j));
            k += len - j;
            skeleton = scratch;
        }
        if (do_pre_mask && (bits & MAY_HOLD_ID)) {
            Py_ssize_t masked = pre_mask(skeleton, k, skeleton_id_from, scratch + area);
            if (masked >= 0) {
                skeleton = scratch + area;
                k = masked;
                fl[i] |= FLAG_PRE_MASKED;
            }
        }
        uint64_t h;
        if (zero_digit_x || !(bits & HAS_DIGIT_X)) {
            unsigned char *out = skeleton == L ? scratch : (unsigned char *)skeleton;
            h = zero_and_hash(out, skeleton, k);
            skeleton = out;
        } else {
            h = hash_bytes(skeleton, k);
        }
        int32_t sid = table_id(table, skeleton, k, h);
        if (sid < 0) goto done;
        id[i] = sid;
    }
    st[lines] = n + (n > 0 && p[n - 1] != '\n' ? 1 : 0);
    result = PyTuple_Pack(5, starts, ids, times, years, flags);
done:
    PyMem_Free(scratch);
    Py_XDECREF(starts);
    Py_XDECREF(ids);
    Py_XDECREF(times);
    Py_XDECREF(years);
    Py_XDECREF(flags);
    PyBuffer_Release(&buf);
    return result;
}

/* ------------------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"count_clean_lines", count_clean_lines, METH_VARARGS,
     "Lines of a plain ASCII block ending in a newline; -1 if it is not plain, -2 if not ASCII."},
    {"scan", scan, METH_VARARGS, "(starts, skeleton ids, times, years, flags) of a plain ASCII block."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_l4diag_native", "l4diag's optional native map scanner.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__l4diag_native(void) {
    for (int c = 0; c < 256; c++) {
        FIRST_OK[c] = ISDIGIT(c) || c >= 128 || (c && strchr("[(IWEFJMASOND", c) != NULL);
        LETTER[c] = c && strchr("IWEFJMASOND", c) != NULL;
        GLOG[c] = c && strchr("IWEF", c) != NULL;
        HEX[c] = ISDIGIT(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        WORD[c] = HEX[c] ? 3 : (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    }
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "SkeletonTable", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    /* l4diag/native.py uses the module only when this matches its own API_VERSION: a build left
     * over from an older checkout (an editable install not rebuilt) is ignored, not called wrongly */
    PyModule_AddIntConstant(m, "API_VERSION", 2);
    PyModule_AddIntConstant(m, "FLAG_ISO", FLAG_ISO);
    PyModule_AddIntConstant(m, "FLAG_HARD", FLAG_HARD);
    PyModule_AddIntConstant(m, "FLAG_LITERAL_NODE", FLAG_LITERAL_NODE);
    PyModule_AddIntConstant(m, "FLAG_PRE_MASKED", FLAG_PRE_MASKED);
    return m;
}
