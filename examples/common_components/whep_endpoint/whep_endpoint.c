/*
 * WHEP endpoint logic (see whep_endpoint.h). Plain C99 and libc only, so that the host tests
 * (xtask/src/idf/whep_tests.rs) compile it with gcc and drive it without sockets.
 */
#include "whep_endpoint.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- SDP ------------------------------------------------------------------------------------ */

typedef struct {
    const char *at;
    size_t len;
} span_t;

static bool starts_with(span_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.at, prefix, n) == 0;
}

static bool copy_span(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap) {
        return false;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

/* Case-insensitive search of `needle` in a span. */
static const char *span_find(span_t s, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= s.len; ++i) {
        size_t k = 0;
        while (k < n && tolower((unsigned char)s.at[i + k]) == tolower((unsigned char)needle[k])) {
            ++k;
        }
        if (k == n) {
            return s.at + i;
        }
    }
    return NULL;
}

/* Reads a decimal payload type at `p` (within `end`); -1 if none. */
static int read_pt(const char *p, const char *end)
{
    int v = 0, digits = 0;
    while (p < end && isdigit((unsigned char)*p) && digits < 4) {
        v = v * 10 + (*p++ - '0');
        ++digits;
    }
    return digits > 0 && v <= 127 ? v : -1;
}

/* How much we like an H.264 fmtp: 3 constrained baseline (profile-level-id 42e0xx, what
 * h264_testsrc sends), 2 another baseline profile (42xxxx), 1 any other packetization-mode 1
 * (Main and High decoders decode constrained baseline), 0 unusable (packetization-mode 0 only). */
static int h264_rank(span_t fmtp)
{
    const char *mode = span_find(fmtp, "packetization-mode=1");
    if (mode == NULL) {
        return 0;
    }
    const char *profile = span_find(fmtp, "profile-level-id=");
    if (profile != NULL) {
        profile += strlen("profile-level-id=");
        size_t left = (size_t)(fmtp.at + fmtp.len - profile);
        if (left >= 4 && strncasecmp(profile, "42e0", 4) == 0) {
            return 3;
        }
        if (left >= 2 && strncmp(profile, "42", 2) == 0) {
            return 2;
        }
    }
    return 1;
}

typedef enum { SECTION_NONE, SECTION_VIDEO, SECTION_APPLICATION, SECTION_OTHER } section_t;

/* The parser's state inside one m= section. */
typedef struct {
    section_t kind;
    char mid[WHEP_MID_MAX];
    bool mid_too_long;
    bool receives; /* video: no a=sendonly / a=inactive, so the offerer wants to receive */
    int h264_pts[32];
    int h264_count;
    int best_pt, best_rank;
    span_t best_fmtp;
} section_state_t;

/* A section ends (at the next m= line or the end): keep what it offered. Only the first video
 * section that receives, and the first data channel section, count. */
static whep_offer_result_t end_section(const section_state_t *s, whep_offer_t *out, bool *video_taken)
{
    if (s->kind == SECTION_VIDEO && s->receives && !*video_taken) {
        *video_taken = true;
        if (s->mid_too_long) {
            return WHEP_OFFER_FIELD_TOO_LONG;
        }
        strcpy(out->video_mid, s->mid);
        if (s->best_pt >= 0) {
            out->h264_payload_type = s->best_pt;
            if (!copy_span(out->h264_fmtp, sizeof(out->h264_fmtp), s->best_fmtp.at, s->best_fmtp.len)) {
                return WHEP_OFFER_FIELD_TOO_LONG;
            }
        }
    } else if (s->kind == SECTION_APPLICATION && out->data_mid[0] == '\0') {
        if (s->mid_too_long || s->mid[0] == '\0') {
            /* A data channel needs its mid in the answer; an empty one is kept as "no channel". */
            return s->mid_too_long ? WHEP_OFFER_FIELD_TOO_LONG : WHEP_OFFER_OK;
        }
        strcpy(out->data_mid, s->mid);
    }
    return WHEP_OFFER_OK;
}

static void section_line(section_state_t *s, span_t line)
{
    if (starts_with(line, "a=mid:")) {
        s->mid_too_long = !copy_span(s->mid, sizeof(s->mid), line.at + 6, line.len - 6);
        if (s->mid_too_long) {
            s->mid[0] = '\0';
        }
        return;
    }
    if (s->kind != SECTION_VIDEO) {
        return;
    }
    if (starts_with(line, "a=sendonly") || starts_with(line, "a=inactive")) {
        s->receives = false;
    } else if (starts_with(line, "a=rtpmap:")) {
        int pt = read_pt(line.at + 9, line.at + line.len);
        const char *name = memchr(line.at, ' ', line.len);
        span_t rest = {name, name != NULL ? (size_t)(line.at + line.len - name) : 0};
        if (pt >= 0 && name != NULL && span_find(rest, " H264/90000") == rest.at &&
            s->h264_count < (int)(sizeof(s->h264_pts) / sizeof(s->h264_pts[0]))) {
            s->h264_pts[s->h264_count++] = pt;
        }
    } else if (starts_with(line, "a=fmtp:")) {
        int pt = read_pt(line.at + 7, line.at + line.len);
        const char *params = memchr(line.at, ' ', line.len);
        for (int i = 0; i < s->h264_count && params != NULL; ++i) {
            if (s->h264_pts[i] != pt) {
                continue;
            }
            span_t fmtp = {params + 1, (size_t)(line.at + line.len - params - 1)};
            int rank = h264_rank(fmtp);
            if (rank > s->best_rank) {
                s->best_rank = rank;
                s->best_pt = pt;
                s->best_fmtp = fmtp;
            }
        }
    }
}

whep_offer_result_t whep_parse_offer(const char *sdp, size_t len, whep_offer_t *out)
{
    memset(out, 0, sizeof(*out));
    out->h264_payload_type = -1;
    if (sdp == NULL || len < 3 || memcmp(sdp, "v=0", 3) != 0) {
        return WHEP_OFFER_NOT_SDP;
    }
    const char *end = sdp + len;
    section_state_t section = {.kind = SECTION_NONE};
    bool media = false, video_taken = false;
    whep_offer_result_t result = WHEP_OFFER_OK;
    const char *p = sdp;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        span_t line = {p, (size_t)(line_end - p)};
        if (line.len > 0 && line.at[line.len - 1] == '\r') {
            line.len--;
        }
        if (starts_with(line, "m=")) {
            whep_offer_result_t r = end_section(&section, out, &video_taken);
            if (result == WHEP_OFFER_OK) {
                result = r;
            }
            media = true;
            memset(&section, 0, sizeof(section));
            section.best_pt = -1;
            section.receives = true;
            if (starts_with(line, "m=video ")) {
                section.kind = SECTION_VIDEO;
            } else if (starts_with(line, "m=application ") && span_find(line, "webrtc-datachannel") != NULL) {
                section.kind = SECTION_APPLICATION;
            } else {
                section.kind = SECTION_OTHER;
            }
        } else if (section.kind != SECTION_NONE) {
            section_line(&section, line);
        }
        p = line_end + 1;
    }
    whep_offer_result_t r = end_section(&section, out, &video_taken);
    if (result == WHEP_OFFER_OK) {
        result = r;
    }
    if (!media) {
        return WHEP_OFFER_NOT_SDP;
    }
    if (result != WHEP_OFFER_OK) {
        return result;
    }
    if (video_taken && out->h264_payload_type < 0) {
        return WHEP_OFFER_NO_H264;
    }
    if (!video_taken && out->data_mid[0] == '\0') {
        return WHEP_OFFER_NOTHING_TO_SEND;
    }
    return WHEP_OFFER_OK;
}

const char *whep_offer_result_text(whep_offer_result_t result)
{
    switch (result) {
    case WHEP_OFFER_OK:
        return "ok";
    case WHEP_OFFER_NOT_SDP:
        return "the body is not an SDP offer (v=0 and at least one m= line)";
    case WHEP_OFFER_NO_H264:
        return "the offer receives video but has no H.264 with packetization-mode=1";
    case WHEP_OFFER_NOTHING_TO_SEND:
        return "the offer receives no video and has no data channel";
    case WHEP_OFFER_FIELD_TOO_LONG:
        return "a mid or the H.264 fmtp line of the offer is too long";
    }
    return "bad offer";
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

whep_method_t whep_method_from_name(const char *name)
{
    static const struct {
        const char *name;
        whep_method_t method;
    } names[] = {
        {"GET", WHEP_METHOD_GET},       {"POST", WHEP_METHOD_POST},       {"DELETE", WHEP_METHOD_DELETE},
        {"PATCH", WHEP_METHOD_PATCH},   {"OPTIONS", WHEP_METHOD_OPTIONS},
    };
    for (size_t i = 0; name != NULL && i < sizeof(names) / sizeof(names[0]); ++i) {
        if (strcmp(name, names[i].name) == 0) {
            return names[i].method;
        }
    }
    return WHEP_METHOD_OTHER;
}

void whep_endpoint_init(whep_endpoint_t *ep, const whep_backend_t *backend, const char *page,
                        size_t max_offer_bytes, size_t answer_capacity, int max_sessions)
{
    memset(ep, 0, sizeof(*ep));
    ep->backend = *backend;
    ep->page = page;
    ep->page_len = page != NULL ? strlen(page) : 0;
    ep->max_offer_bytes = max_offer_bytes;
    ep->answer_capacity = answer_capacity;
    ep->max_sessions = max_sessions < 1 ? 1 : max_sessions > WHEP_SESSIONS_MAX ? WHEP_SESSIONS_MAX : max_sessions;
}

static void add_header(whep_response_t *resp, const char *name, const char *value)
{
    if (resp->header_count < WHEP_HEADERS_MAX) {
        resp->headers[resp->header_count].name = name;
        resp->headers[resp->header_count].value = value;
        resp->header_count++;
    }
}

static void respond(whep_response_t *resp, int status, const char *status_line, const char *text)
{
    resp->status = status;
    resp->status_line = status_line;
    if (text != NULL) {
        resp->content_type = "text/plain";
        resp->body = text;
        resp->body_len = strlen(text);
    }
}

/* Every WHEP response may be read by a player on another origin (a web player page); the
 * Location header must be exposed to it. */
static void cors(whep_response_t *resp)
{
    add_header(resp, "Access-Control-Allow-Origin", "*");
    add_header(resp, "Access-Control-Expose-Headers", "Location");
}

/* "application/sdp", any case, parameters (;charset=...) and spaces allowed. */
static bool is_sdp_type(const char *content_type)
{
    if (content_type == NULL) {
        return false;
    }
    while (*content_type == ' ') {
        ++content_type;
    }
    static const char sdp[] = "application/sdp";
    if (strncasecmp(content_type, sdp, sizeof(sdp) - 1) != 0) {
        return false;
    }
    char next = content_type[sizeof(sdp) - 1];
    return next == '\0' || next == ';' || next == ' ';
}

/* Whether `slot` holds a session; forgets one that ended by itself. */
static bool session_running(whep_endpoint_t *ep, int slot)
{
    if (ep->session_path[slot][0] == '\0') {
        return false;
    }
    if (ep->backend.alive != NULL && !ep->backend.alive(ep->backend.ctx, slot)) {
        ep->backend.stop(ep->backend.ctx, slot); /* release what is left of it */
        ep->session_path[slot][0] = '\0';
        return false;
    }
    return true;
}

/* A slot without a running session, or -1 when all max_sessions run. */
static int free_slot(whep_endpoint_t *ep)
{
    for (int slot = 0; slot < ep->max_sessions; ++slot) {
        if (!session_running(ep, slot)) {
            return slot;
        }
    }
    return -1;
}

/* The slot whose session has this path, or -1. */
static int slot_of(whep_endpoint_t *ep, const char *path)
{
    for (int slot = 0; slot < ep->max_sessions; ++slot) {
        if (session_running(ep, slot) && strcmp(path, ep->session_path[slot]) == 0) {
            return slot;
        }
    }
    return -1;
}

static void post_offer(whep_endpoint_t *ep, const whep_request_t *req, whep_response_t *resp)
{
    if (!is_sdp_type(req->content_type)) {
        respond(resp, 415, "415 Unsupported Media Type", "POST an SDP offer with Content-Type: application/sdp\n");
        add_header(resp, "Accept-Post", "application/sdp");
        return;
    }
    if (req->content_length > ep->max_offer_bytes || req->body == NULL) {
        respond(resp, 413, "413 Content Too Large", "the offer is larger than this device accepts\n");
        return;
    }
    int slot = free_slot(ep);
    if (slot < 0) {
        /* Each PeerConnection needs the stack's per-connection memory: max_sessions is what the
         * application affords. */
        respond(resp, 503, "503 Service Unavailable",
                ep->max_sessions == 1 ? "a session is already running (one at a time)\n"
                                      : "every session the device serves is running\n");
        add_header(resp, "Retry-After", "5");
        return;
    }
    whep_offer_t offer;
    whep_offer_result_t parsed = whep_parse_offer(req->body, req->content_length, &offer);
    if (parsed != WHEP_OFFER_OK) {
        respond(resp, 400, "400 Bad Request", whep_offer_result_text(parsed));
        return;
    }
    char *text = malloc(req->content_length + 1);
    char *answer = malloc(ep->answer_capacity);
    if (text == NULL || answer == NULL) {
        free(text);
        free(answer);
        respond(resp, 500, "500 Internal Server Error", "out of memory\n");
        return;
    }
    memcpy(text, req->body, req->content_length);
    text[req->content_length] = '\0';
    answer[0] = '\0';
    whep_start_result_t started = ep->backend.start(ep->backend.ctx, slot, text, &offer, answer, ep->answer_capacity);
    free(text);
    if (started != WHEP_START_OK) {
        free(answer);
        if (started == WHEP_START_BAD_OFFER) {
            respond(resp, 400, "400 Bad Request", "the WebRTC stack refused the offer\n");
        } else {
            respond(resp, 500, "500 Internal Server Error", "the session could not be started\n");
        }
        return;
    }
    uint32_t a = ep->backend.random(ep->backend.ctx), b = ep->backend.random(ep->backend.ctx);
    snprintf(ep->session_path[slot], sizeof(ep->session_path[slot]), WHEP_ENDPOINT_PATH "/%08x%08x", (unsigned)a,
             (unsigned)b);
    strcpy(resp->location, ep->session_path[slot]);
    resp->status = 201;
    resp->status_line = "201 Created";
    resp->content_type = "application/sdp";
    resp->owned = answer;
    resp->body = answer;
    resp->body_len = strlen(answer);
    add_header(resp, "Location", resp->location);
}

void whep_handle(whep_endpoint_t *ep, const whep_request_t *req, whep_response_t *resp)
{
    memset(resp, 0, sizeof(*resp));
    const char *path = req->path != NULL ? req->path : "";
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        if (req->method != WHEP_METHOD_GET) {
            respond(resp, 405, "405 Method Not Allowed", "only GET here\n");
            add_header(resp, "Allow", "GET");
            return;
        }
        resp->status = 200;
        resp->status_line = "200 OK";
        resp->content_type = "text/html; charset=utf-8";
        resp->body = ep->page != NULL ? ep->page : "";
        resp->body_len = ep->page_len;
        return;
    }
    if (strcmp(path, WHEP_ENDPOINT_PATH) == 0) {
        cors(resp);
        switch (req->method) {
        case WHEP_METHOD_POST:
            post_offer(ep, req, resp);
            return;
        case WHEP_METHOD_OPTIONS:
            /* CORS preflight of a player on another page, and WHEP's way to ask what is accepted. */
            respond(resp, 204, "204 No Content", NULL);
            add_header(resp, "Accept-Post", "application/sdp");
            add_header(resp, "Access-Control-Allow-Methods", "POST, DELETE, OPTIONS");
            add_header(resp, "Access-Control-Allow-Headers", "Content-Type");
            return;
        default:
            respond(resp, 405, "405 Method Not Allowed", "POST an SDP offer here\n");
            add_header(resp, "Allow", "POST, OPTIONS");
            return;
        }
    }
    if (strncmp(path, WHEP_ENDPOINT_PATH "/", strlen(WHEP_ENDPOINT_PATH "/")) == 0) {
        cors(resp);
        int slot = slot_of(ep, path);
        if (req->method == WHEP_METHOD_OPTIONS) {
            respond(resp, 204, "204 No Content", NULL);
            add_header(resp, "Access-Control-Allow-Methods", "POST, DELETE, OPTIONS");
            add_header(resp, "Access-Control-Allow-Headers", "Content-Type");
            return;
        }
        if (slot < 0) {
            respond(resp, 404, "404 Not Found", "no such session\n");
            return;
        }
        if (req->method == WHEP_METHOD_DELETE) {
            ep->backend.stop(ep->backend.ctx, slot);
            ep->session_path[slot][0] = '\0';
            respond(resp, 200, "200 OK", "session ended\n");
            return;
        }
        /* PATCH included: the answer carries every candidate, there is no trickle ICE and no ICE
         * restart, and a WHEP resource without them answers PATCH with 405. */
        respond(resp, 405, "405 Method Not Allowed", "only DELETE on a session\n");
        add_header(resp, "Allow", "DELETE");
        return;
    }
    respond(resp, 404, "404 Not Found", "not found\n");
}

void whep_response_free(whep_response_t *resp)
{
    free(resp->owned);
    resp->owned = NULL;
}
