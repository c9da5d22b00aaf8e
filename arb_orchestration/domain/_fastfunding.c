/*
 * _fastfunding: the funding sensor's common chunk, read in one C pass.
 *
 * `newest_in_chunk(values, ...)` answers, for a chunk of Kafka values, "each market's newest rate
 * and where it was read", or None. It is an accelerator of a path that exists in Python
 * (`FundingScreen` + `NewestPerMarket.offer_fresh_rows`) and may only ever take a chunk that path
 * would take, with the same outcome. So it is a *conservative recognizer*: it takes a value only
 * in a plain shape it fully understands, and answers None for the whole chunk as soon as one value
 * is anything else. None is never an error: the caller then goes the Python way, which accepts,
 * refuses and words the reasons exactly as before.
 *
 * A value is taken only when all of this holds (anything else -> None for the chunk):
 *   - it is `bytes`, 1..limit long, and starts with '{' and ends with its matching '}';
 *   - a flat JSON object: keys and string values are printable ASCII without escapes (no '\\');
 *     values are strings, numbers (the JSON grammar, at most 32 characters, finite as a double),
 *     or `null`; no `true`/`false`, arrays or nested objects; JSON whitespace between tokens;
 *   - `schema_version` is the token `1` (`schema_version` argument), `event_id` a string of 1..128
 *     characters, `ts` a number within [min_epoch, max_epoch], `venue` and `symbol` strings of
 *     1..64 characters, `rate` a number, `interval_hours` a number > 0, `signature` absent or null;
 *     each of these at most once; any other key once or more, with a value of the kinds above
 *     (ignored, as the model ignores unknown fields);
 * and for the chunk: every `ts` is later than `fresher_than`. Per market, the newest rate wins and
 * a tie (equal times) goes to the later read, as in `NewestPerMarket`; a rate read after one of the
 * same market that is newer by no more than SURELY_APART_S (their datetimes may be a tie, decided
 * only by the Python path's exact comparison) declines the chunk.
 *
 * Numbers are converted with PyOS_string_to_double (correctly rounded, locale-independent), so a
 * `ts` is the same double msgspec and Python's json make of the same token.
 *
 * The markets: `slots` (dict: b"venue\0symbol" -> int) and `markets` (list of (venue, symbol)
 * tuples, indexed by slot) are the caller's, kept across calls; a market not in them is added,
 * unless there are already `max_known` (then None). The answer is a list of
 * (market tuple, index in the chunk, ts) for each market of the chunk, in the order the markets
 * first appear in the chunk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#include <float.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_PATH_ROUNDS_ONCE 1
#else
#define FAST_PATH_ROUNDS_ONCE 0
#endif

#define MAX_NUMBER_CHARS 32
#define MAX_NAME 64
#define MAX_EVENT_ID 128
/* Two times further apart than this are ordered the same as doubles and as the events' datetimes
 * (`triggers._SURELY_APART_S`, passed in and checked by the tests). */
#define SURELY_APART_S 5e-6

enum { F_SCHEMA = 1, F_EVENT_ID = 2, F_TS = 4, F_VENUE = 8, F_SYMBOL = 16, F_RATE = 32, F_INTERVAL = 64,
       F_SIGNATURE = 128 };
#define F_REQUIRED (F_SCHEMA | F_EVENT_ID | F_TS | F_VENUE | F_SYMBOL | F_RATE | F_INTERVAL)

typedef struct {
    const char *venue;
    Py_ssize_t venue_len;
    const char *symbol;
    Py_ssize_t symbol_len;
    double ts;
} Row;

static inline int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && is_ws(*p)) p++;
    return p;
}

/* A string token at p (p points at the opening quote). Printable ASCII, no escapes.
 * Returns the position after the closing quote, or NULL. */
static inline const char *scan_string(const char *p, const char *end, const char **start, Py_ssize_t *len) {
    const char *s = p + 1;
    const char *q = memchr(s, '"', (size_t)(end - s));
    if (q == NULL) return NULL;
    /* Every character printable ASCII and no backslash (an escape: the Python path decides).
     * Branch-free over the span, so the compiler can vectorise it. */
    unsigned bad = 0;
    for (const char *c = s; c < q; c++) {
        unsigned char u = (unsigned char)*c;
        bad |= (unsigned)(u < 0x20) | (unsigned)(u > 0x7e) | (unsigned)(u == '\\');
    }
    if (bad) return NULL;
    *start = s;
    *len = q - s;
    return q + 1;
}

/* A number token at p in the JSON grammar, at most MAX_NUMBER_CHARS. Returns the position after
 * it, or NULL. Sets *finite_nonzero (see below), *negative, *is_one; converts it to *out only when
 * `convert` (a `ts`) or when its exponent is too large for the shortcut, and then also checks it is
 * finite (NULL if not).
 *
 * The shortcut: with at most 32 digits and an explicit exponent of magnitude <= 270, a number is
 * below 1e302 (finite as a double) and, unless every digit is 0, at least 1e-302 in magnitude
 * (not rounded to 0: the smallest normal double is ~2.2e-308). */
static inline const char *scan_number(const char *p, const char *end, int convert, double *out,
                                      int *finite_nonzero, int *negative, int *is_one) {
    const char *s = p;
    int nonzero = 0;
    *negative = 0;
    if (p < end && *p == '-') {
        *negative = 1;
        p++;
    }
    if (p >= end) return NULL;
    /* The mantissa's digits as an integer (while it fits 2^53) and the decimal point's shift. */
    unsigned long long mantissa = 0;
    int digits = 0, shift = 0, exact = 1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            nonzero |= *p != '0';
            if (digits < 19) mantissa = mantissa * 10 + (unsigned)(*p - '0');
            else exact = 0;
            digits++;
            p++;
        }
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !(*p >= '0' && *p <= '9')) return NULL;
        while (p < end && *p >= '0' && *p <= '9') {
            nonzero |= *p != '0';
            if (digits < 19) {
                mantissa = mantissa * 10 + (unsigned)(*p - '0');
                shift--;
            } else {
                exact = 0;
            }
            digits++;
            p++;
        }
    }
    int exponent = 0, has_exponent = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        has_exponent = 1;
        p++;
        int exp_negative = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        if (p >= end || !(*p >= '0' && *p <= '9')) return NULL;
        while (p < end && *p >= '0' && *p <= '9') {
            if (exponent < 100000) exponent = exponent * 10 + (*p - '0');
            p++;
        }
        if (exp_negative) exponent = -exponent;
    }
    Py_ssize_t n = p - s;
    if (n > MAX_NUMBER_CHARS) return NULL;
    *is_one = (n == 1 && *s == '1');
    int shortcut = !has_exponent || (exponent >= -270 && exponent <= 270);
    *finite_nonzero = nonzero;
    if (!convert && shortcut) return p;
    /* Clinger's fast path: an integer mantissa below 2^53 times/over an exact power of ten is one
     * correctly rounded IEEE operation, i.e. the same double as any correct decimal conversion. */
    static const double powers[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int e10 = shift + exponent;
    /* Only where a double operation is one IEEE double rounding (not x87's extended precision,
     * which would round twice): elsewhere PyOS_string_to_double converts every number. */
    if (FAST_PATH_ROUNDS_ONCE && exact && mantissa <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        double value = (double)mantissa;
        value = e10 < 0 ? value / powers[-e10] : value * powers[e10];
        *out = *negative ? -value : value;
        return p;
    }
    char buf[MAX_NUMBER_CHARS + 1];
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    char *stop = NULL;
    double value = PyOS_string_to_double(buf, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (stop != buf + n || !isfinite(value)) return NULL;
    *finite_nonzero = value != 0.0;
    *out = value;
    return p;
}

static inline int key_is(const char *k, Py_ssize_t n, const char *name, Py_ssize_t name_len) {
    return n == name_len && memcmp(k, name, (size_t)n) == 0;
}
#define KEY_IS(k, n, lit) key_is((k), (n), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* Recognize one value; 1 = taken (row filled), 0 = not. */
static int recognize(const char *p, Py_ssize_t size, double min_epoch, double max_epoch, Row *row) {
    const char *end = p + size;
    if (size < 2 || *p != '{' || end[-1] != '}') return 0;
    p++;
    unsigned seen = 0;
    p = skip_ws(p, end);
    if (p < end && *p == '}') return 0; /* {} lacks the required fields */
    for (;;) {
        const char *key;
        Py_ssize_t key_len;
        if (p >= end || *p != '"') return 0;
        p = scan_string(p, end, &key, &key_len);
        if (p == NULL) return 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return 0;
        p = skip_ws(p + 1, end);
        if (p >= end) return 0;

        unsigned field = 0;
        if (KEY_IS(key, key_len, "schema_version")) field = F_SCHEMA;
        else if (KEY_IS(key, key_len, "event_id")) field = F_EVENT_ID;
        else if (KEY_IS(key, key_len, "ts")) field = F_TS;
        else if (KEY_IS(key, key_len, "venue")) field = F_VENUE;
        else if (KEY_IS(key, key_len, "symbol")) field = F_SYMBOL;
        else if (KEY_IS(key, key_len, "rate")) field = F_RATE;
        else if (KEY_IS(key, key_len, "interval_hours")) field = F_INTERVAL;
        else if (KEY_IS(key, key_len, "signature")) field = F_SIGNATURE;
        if (field) {
            if (seen & field) return 0; /* a repeated field: the Python path decides */
            seen |= field;
        }

        char c = *p;
        if (c == '"') {
            const char *s;
            Py_ssize_t n;
            p = scan_string(p, end, &s, &n);
            if (p == NULL) return 0;
            switch (field) {
            case 0: break;
            case F_EVENT_ID:
                if (n < 1 || n > MAX_EVENT_ID) return 0;
                break;
            case F_VENUE:
                if (n < 1 || n > MAX_NAME) return 0;
                row->venue = s;
                row->venue_len = n;
                break;
            case F_SYMBOL:
                if (n < 1 || n > MAX_NAME) return 0;
                row->symbol = s;
                row->symbol_len = n;
                break;
            default: return 0; /* a string where a number (or null) belongs, or a signature */
            }
        } else if (c == 'n') {
            if (end - p < 4 || memcmp(p, "null", 4) != 0) return 0;
            p += 4;
            if (field != 0 && field != F_SIGNATURE) return 0;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            double value = 0.0;
            int is_one, finite_nonzero, negative;
            p = scan_number(p, end, field == F_TS, &value, &finite_nonzero, &negative, &is_one);
            if (p == NULL) return 0;
            switch (field) {
            case 0:
            case F_RATE: break;
            case F_SCHEMA:
                if (!is_one) return 0;
                break;
            case F_TS:
                if (!(value >= min_epoch && value <= max_epoch)) return 0;
                row->ts = value;
                break;
            case F_INTERVAL:
                if (negative || !finite_nonzero) return 0;
                break;
            default: return 0;
            }
        } else {
            return 0; /* true/false, arrays, objects, anything else */
        }

        p = skip_ws(p, end);
        if (p >= end) return 0;
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (*p == '}' && p == end - 1) break;
        return 0;
    }
    return (seen & F_REQUIRED) == F_REQUIRED;
}

#define CACHE_SIZE 64

typedef struct {
    const char *venue; /* into a value of the chunk (alive for the call), NULL when empty */
    Py_ssize_t venue_len;
    const char *symbol;
    Py_ssize_t symbol_len;
    Py_ssize_t slot;
} CacheEntry;

/* A slot found in `slots`: >= 0; -2 (error set) when it is not an index of `markets`; -1 (decline)
 * when it is beyond this call's arrays (`span` long: a market added by another caller during this
 * call). */
static Py_ssize_t checked_slot(PyObject *slot_obj, PyObject *markets, Py_ssize_t span) {
    Py_ssize_t slot = PyLong_AsSsize_t(slot_obj);
    if (slot == -1 && PyErr_Occurred()) return -2;
    if (slot < 0 || slot >= PyList_GET_SIZE(markets)) {
        PyErr_SetString(PyExc_ValueError, "newest_in_chunk: a slot outside markets");
        return -2;
    }
    return slot >= span ? -1 : slot;
}

/* The slot of row's market in `slots`/`markets`, added when new: >= 0; -1 when it would be one
 * more than `max_known`, or is beyond this call's arrays (`span` long) (decline); -2 on an error (set).
 *
 * Building the market's tuple may run the garbage collector and so Python code (finalizers, gc
 * callbacks), during which another thread or a nested call may add markets to the same
 * `slots`/`markets`. So the tuple is built first; the key is then looked up again and the new
 * slot taken from the list's size only right before it is appended and recorded, with no
 * allocation in between that could run Python code (an int and a list/dict resize do not). */
static Py_ssize_t slot_of(const Row *row, PyObject *slots, PyObject *markets, Py_ssize_t max_known, Py_ssize_t span,
                          char *keybuf) {
    memcpy(keybuf, row->venue, (size_t)row->venue_len);
    keybuf[row->venue_len] = '\0';
    memcpy(keybuf + row->venue_len + 1, row->symbol, (size_t)row->symbol_len);
    PyObject *key = PyBytes_FromStringAndSize(keybuf, row->venue_len + 1 + row->symbol_len);
    if (key == NULL) return -2;
    Py_ssize_t slot;
    PyObject *market = NULL;
    PyObject *slot_obj = PyDict_GetItemWithError(slots, key); /* borrowed, used at once */
    if (slot_obj != NULL) {
        slot = checked_slot(slot_obj, markets, span);
        goto done;
    }
    if (PyErr_Occurred()) {
        slot = -2;
        goto done;
    }
    if (PyList_GET_SIZE(markets) >= max_known || PyList_GET_SIZE(markets) >= span) {
        slot = -1;
        goto done;
    }
    market = Py_BuildValue("(s#s#)", row->venue, row->venue_len, row->symbol, row->symbol_len);
    if (market == NULL) {
        slot = -2;
        goto done;
    }
    /* From here to the end: nothing that can run Python code. */
    slot_obj = PyDict_GetItemWithError(slots, key);
    if (slot_obj != NULL) { /* added meanwhile */
        slot = checked_slot(slot_obj, markets, span);
        goto done;
    }
    if (PyErr_Occurred()) {
        slot = -2;
        goto done;
    }
    slot = PyList_GET_SIZE(markets);
    if (slot >= max_known || slot >= span) {
        slot = -1;
        goto done;
    }
    PyObject *slot_new = PyLong_FromSsize_t(slot);
    if (slot_new == NULL) {
        slot = -2;
        goto done;
    }
    if (PyList_Append(markets, market) < 0) {
        slot = -2;
    } else if (PyDict_SetItem(slots, key, slot_new) < 0) {
        /* Keep `slots` and `markets` in step: take the market back out. */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        (void)PyList_SetSlice(markets, slot, slot + 1, NULL);
        PyErr_Restore(type, value, traceback);
        slot = -2;
    }
    Py_DECREF(slot_new);
done:
    Py_XDECREF(market);
    Py_DECREF(key);
    return slot;
}

static PyObject *newest_in_chunk(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *values, *slots, *markets;
    double fresher_than, min_epoch, max_epoch;
    Py_ssize_t limit, max_known;
    if (!PyArg_ParseTuple(args, "O!dnddO!O!n", &PyList_Type, &values, &fresher_than, &limit, &min_epoch,
                          &max_epoch, &PyDict_Type, &slots, &PyList_Type, &markets, &max_known))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(values);
    Py_ssize_t known = PyList_GET_SIZE(markets);
    if (PyDict_GET_SIZE(slots) != known) {
        PyErr_SetString(PyExc_ValueError, "newest_in_chunk: slots and markets disagree");
        return NULL;
    }
    if (max_known < known) max_known = known;
    /* Per slot: the last index read in this chunk (-1: not in it), and the markets in first-seen order.
     * A call adds at most `count` markets, so `known + count` slots (not `max_known`, which may be
     * anything up to PY_SSIZE_T_MAX) bound the arrays; both are list sizes, so the sum cannot overflow. */
    Py_ssize_t span = known + count;
    if (span > max_known) span = max_known;
    if (span < known) span = known;
    Py_ssize_t *last = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(span + 1));
    double *last_ts = PyMem_Malloc(sizeof(double) * (size_t)(span + 1));
    Py_ssize_t *order = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(span + 1));
    if (last == NULL || last_ts == NULL || order == NULL) {
        PyMem_Free(last);
        PyMem_Free(last_ts);
        PyMem_Free(order);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t s = 0; s < span; s++) last[s] = -1;
    Py_ssize_t in_chunk = 0;
    PyObject *result = NULL;
    char keybuf[2 * MAX_NAME + 1];
    CacheEntry cache[CACHE_SIZE];
    memset(cache, 0, sizeof(cache));

    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        if (!PyBytes_CheckExact(value)) goto decline;
        Py_ssize_t size = PyBytes_GET_SIZE(value);
        if (size < 1 || size > limit) goto decline;
        Row row;
        if (!recognize(PyBytes_AS_STRING(value), size, min_epoch, max_epoch, &row)) goto decline;
        if (!(row.ts > fresher_than)) goto decline;

        /* The market's slot: this call's small cache first (a chunk holds a handful of markets),
         * then the caller's `slots` dict, then a new slot. */
        unsigned long long hash = 1469598103934665603ULL;
        for (Py_ssize_t b = 0; b < row.venue_len; b++) hash = (hash ^ (unsigned char)row.venue[b]) * 1099511628211ULL;
        hash = (hash ^ 0xffu) * 1099511628211ULL;
        for (Py_ssize_t b = 0; b < row.symbol_len; b++) hash = (hash ^ (unsigned char)row.symbol[b]) * 1099511628211ULL;
        CacheEntry *entry = &cache[(hash ^ (hash >> 29)) & (CACHE_SIZE - 1)];
        Py_ssize_t slot;
        if (entry->venue != NULL && entry->venue_len == row.venue_len && entry->symbol_len == row.symbol_len
            && memcmp(entry->venue, row.venue, (size_t)row.venue_len) == 0
            && memcmp(entry->symbol, row.symbol, (size_t)row.symbol_len) == 0) {
            slot = entry->slot;
        } else {
            slot = slot_of(&row, slots, markets, max_known, span, keybuf);
            if (slot == -2) goto error;
            if (slot == -1) goto decline;
            entry->venue = row.venue;
            entry->venue_len = row.venue_len;
            entry->symbol = row.symbol;
            entry->symbol_len = row.symbol_len;
            entry->slot = slot;
        }
        if (last[slot] < 0) {
            order[in_chunk++] = slot;
        } else if (row.ts < last_ts[slot]) {
            /* Out of read order for this market. Clearly older: the held rate stays. Within
             * SURELY_APART_S the events' datetimes (microseconds) may be a tie, which the later
             * read would win: only the Python path compares those exactly. */
            if (last_ts[slot] - row.ts <= SURELY_APART_S) goto decline;
            continue;
        }
        /* Later or equal as a double: later or equal as a datetime too (fromtimestamp rounds
         * monotonically), and a tie goes to the later read, this one. */
        last[slot] = i;
        last_ts[slot] = row.ts;
    }

    result = PyList_New(in_chunk);
    if (result == NULL) goto error;
    for (Py_ssize_t k = 0; k < in_chunk; k++) {
        Py_ssize_t slot = order[k];
        /* A strong reference before building the item (which may run Python code). */
        PyObject *market = slot < PyList_GET_SIZE(markets) ? PyList_GET_ITEM(markets, slot) : NULL;
        if (market == NULL) {
            PyErr_SetString(PyExc_ValueError, "newest_in_chunk: markets changed during the call");
            Py_CLEAR(result);
            goto error;
        }
        Py_INCREF(market);
        PyObject *item = Py_BuildValue("(Nnd)", market, last[slot], last_ts[slot]);
        if (item == NULL) {
            Py_CLEAR(result);
            goto error;
        }
        PyList_SET_ITEM(result, k, item);
    }
    PyMem_Free(last);
    PyMem_Free(last_ts);
    PyMem_Free(order);
    return result;

decline:
    PyMem_Free(last);
    PyMem_Free(last_ts);
    PyMem_Free(order);
    Py_RETURN_NONE;

error:
    PyMem_Free(last);
    PyMem_Free(last_ts);
    PyMem_Free(order);
    return NULL;
}

static PyObject *recognize_one(PyObject *Py_UNUSED(module), PyObject *args) {
    /* For the tests: (venue, symbol, ts) when one value is taken, else None. */
    Py_buffer view;
    double min_epoch, max_epoch;
    if (!PyArg_ParseTuple(args, "y*dd", &view, &min_epoch, &max_epoch)) return NULL;
    Row row;
    int taken = view.len >= 1 && recognize(view.buf, view.len, min_epoch, max_epoch, &row);
    PyObject *out;
    if (taken)
        out = Py_BuildValue("(s#s#d)", row.venue, row.venue_len, row.symbol, row.symbol_len, row.ts);
    else
        out = Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"newest_in_chunk", newest_in_chunk, METH_VARARGS,
     "newest_in_chunk(values, fresher_than, limit, min_epoch, max_epoch, slots, markets, max_known)\n"
     "Each market's newest rate in a chunk of plain funding-rate values, or None (see the source)."},
    {"recognize_one", recognize_one, METH_VARARGS,
     "recognize_one(value, min_epoch, max_epoch) -> (venue, symbol, ts) or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastfunding",
    "The funding sensor's common chunk in one C pass (a conservative recognizer; see the source).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastfunding(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObject(module, "SURELY_APART_S", PyFloat_FromDouble(SURELY_APART_S)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
