/*
 * Host tests of whep_endpoint: no sockets, no ESP-IDF. xtask/src/idf/whep_tests.rs compiles this
 * with gcc (warnings as errors, AddressSanitizer and UBSan) and runs it with the offers directory
 * as its argument. offers/chromium.sdp and offers/aiortc.sdp are real offers (Chromium 156 and
 * aiortc 1.16.0, each recvonly video plus a data channel, as examples/whep_camera's page and
 * lab/interop/whep_client.py make them). Exit 0 and a count of checks, or each failure named.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whep_endpoint.h"

static int checks, failures;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        ++checks;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            ++failures;                                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                \
        }                                                                                                              \
    } while (0)

static char *read_file(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (text == NULL || fread(text, 1, (size_t)n, f) != (size_t)n) {
        exit(2);
    }
    text[n] = '\0';
    fclose(f);
    return text;
}

/* The same text with CRLF turned into LF. */
static char *lf_only(const char *text)
{
    char *out = malloc(strlen(text) + 1), *o = out;
    for (const char *p = text; *p; ++p) {
        if (!(p[0] == '\r' && p[1] == '\n')) {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static whep_offer_result_t parse(const char *sdp, whep_offer_t *out)
{
    /* An exact-size heap copy, not NUL-terminated: ASan catches a read past `len`. */
    size_t len = strlen(sdp);
    char *copy = malloc(len > 0 ? len : 1);
    memcpy(copy, sdp, len);
    whep_offer_result_t r = whep_parse_offer(copy, len, out);
    free(copy);
    return r;
}

static void test_real_offers(const char *dir)
{
    whep_offer_t o;
    char *chromium = read_file(dir, "chromium.sdp");
    CHECK(parse(chromium, &o) == WHEP_OFFER_OK);
    CHECK(strcmp(o.video_mid, "0") == 0);
    /* Chromium lists 102 (42001f), 104 (mode 0), 108 (42e01f), ...: constrained baseline wins. */
    CHECK(o.h264_payload_type == 108);
    CHECK(strstr(o.h264_fmtp, "profile-level-id=42e01f") != NULL);
    CHECK(strstr(o.h264_fmtp, "packetization-mode=1") != NULL);
    CHECK(strcmp(o.data_mid, "1") == 0);
    char *lf = lf_only(chromium);
    whep_offer_t o2;
    CHECK(parse(lf, &o2) == WHEP_OFFER_OK);
    CHECK(o2.h264_payload_type == 108 && strcmp(o2.h264_fmtp, o.h264_fmtp) == 0 && strcmp(o2.data_mid, "1") == 0);
    free(lf);
    free(chromium);

    char *aiortc = read_file(dir, "aiortc.sdp");
    CHECK(parse(aiortc, &o) == WHEP_OFFER_OK);
    CHECK(strcmp(o.video_mid, "0") == 0);
    CHECK(o.h264_payload_type == 101); /* 99 is 42001f, 101 is 42e01f */
    CHECK(strcmp(o.data_mid, "1") == 0);
    free(aiortc);
}

static void test_offer_shapes(void)
{
    whep_offer_t o;
    CHECK(parse("", &o) == WHEP_OFFER_NOT_SDP);
    CHECK(parse("hello", &o) == WHEP_OFFER_NOT_SDP);
    CHECK(parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n", &o) == WHEP_OFFER_NOT_SDP);
    CHECK(whep_parse_offer(NULL, 0, &o) == WHEP_OFFER_NOT_SDP);

    /* Video the offerer receives, VP8 only; then H.264 in packetization-mode 0 only. */
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n", &o) ==
          WHEP_OFFER_NO_H264);
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=rtpmap:96 H264/90000\r\n"
                "a=fmtp:96 packetization-mode=0;profile-level-id=42e01f\r\n",
                &o) == WHEP_OFFER_NO_H264);
    /* Attributes on a last line without a line end count; lower-case codec name; no profile. */
    CHECK(parse("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 100\na=mid:cam\na=rtpmap:100 h264/90000\na=fmtp:100 packetization-mode=1",
                &o) == WHEP_OFFER_OK);
    CHECK(o.h264_payload_type == 100 && strcmp(o.video_mid, "cam") == 0 && o.data_mid[0] == '\0');
    CHECK(strcmp(o.h264_fmtp, "packetization-mode=1") == 0);
    /* High profile only, packetization-mode 1: taken (a High decoder decodes constrained baseline). */
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 41\r\na=mid:0\r\na=rtpmap:41 H264/90000\r\n"
                "a=fmtp:41 packetization-mode=1;profile-level-id=64001f\r\n",
                &o) == WHEP_OFFER_OK);
    CHECK(o.h264_payload_type == 41);
    /* The offerer only sends video (a WHIP-like offer) but has a data channel: data only. */
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n"
                "a=fmtp:96 packetization-mode=1\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n",
                &o) == WHEP_OFFER_OK);
    CHECK(o.video_mid[0] == '\0' && o.h264_payload_type == -1 && strcmp(o.data_mid, "1") == 0);
    /* Audio alone: nothing this device sends. */
    CHECK(parse("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n", &o) ==
          WHEP_OFFER_NOTHING_TO_SEND);
    /* The second video section is ignored; the first one that receives is taken. */
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:a\r\na=inactive\r\n"
                "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:b\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 packetization-mode=1\r\n",
                &o) == WHEP_OFFER_OK);
    CHECK(strcmp(o.video_mid, "b") == 0 && o.h264_payload_type == 97);
    /* An a=fmtp before its rtpmap does not count (RFC order is rtpmap first; we need the name). */
    CHECK(parse("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=fmtp:96 packetization-mode=1\r\n"
                "a=rtpmap:96 H264/90000\r\n",
                &o) == WHEP_OFFER_NO_H264);
    /* A mid longer than the buffer is refused, not cut. */
    char long_mid[200];
    snprintf(long_mid, sizeof(long_mid), "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:%0*d\r\n",
             WHEP_MID_MAX, 7);
    CHECK(parse(long_mid, &o) == WHEP_OFFER_FIELD_TOO_LONG);
    /* Payload types out of range and garbage after rtpmap: ignored, no crash. */
    CHECK(parse("v=0\r\nm=video 9 X 1\r\na=rtpmap:999 H264/90000\r\na=rtpmap:\r\na=fmtp:\r\na=fmtp:1\r\na=mid:\r\n", &o) ==
          WHEP_OFFER_NO_H264);
    for (int r = WHEP_OFFER_FIELD_TOO_LONG; r <= WHEP_OFFER_OK; ++r) {
        CHECK(strlen(whep_offer_result_text((whep_offer_result_t)r)) > 1);
    }
}

/* ---- the endpoint against a fake WebRTC side ---- */

typedef struct {
    int starts, stops;
    bool alive; /* slot 0's, as the one-session tests see it */
    bool alive_slot[WHEP_SESSIONS_MAX];
    int last_slot;
    whep_start_result_t next_result;
    char last_offer[64];
    whep_offer_t last_parsed;
    uint32_t counter;
} fake_t;

static whep_start_result_t fake_start(void *ctx, int slot, const char *offer, const whep_offer_t *parsed,
                                      char *answer, size_t answer_size)
{
    fake_t *f = ctx;
    f->starts++;
    f->last_slot = slot;
    snprintf(f->last_offer, sizeof(f->last_offer), "%s", offer);
    f->last_parsed = *parsed;
    if (f->next_result != WHEP_START_OK) {
        return f->next_result;
    }
    snprintf(answer, answer_size, "v=0\r\nanswer %d\r\n", f->starts);
    if (slot == 0) {
        f->alive = true;
    }
    f->alive_slot[slot] = true;
    return WHEP_START_OK;
}

static void fake_stop(void *ctx, int slot)
{
    fake_t *f = ctx;
    f->stops++;
    f->last_slot = slot;
    if (slot == 0) {
        f->alive = false;
    }
    f->alive_slot[slot] = false;
}

static bool fake_alive(void *ctx, int slot)
{
    fake_t *f = ctx;
    return slot == 0 ? f->alive : f->alive_slot[slot];
}

static uint32_t fake_random(void *ctx)
{
    return ++((fake_t *)ctx)->counter;
}

static const char *header(const whep_response_t *r, const char *name)
{
    for (int i = 0; i < r->header_count; ++i) {
        if (strcmp(r->headers[i].name, name) == 0) {
            return r->headers[i].value;
        }
    }
    return NULL;
}

static const char OFFER[] = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n"
                            "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n"
                            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";

static int request(whep_endpoint_t *ep, whep_method_t method, const char *path, const char *type, const char *body,
                   whep_response_t *resp)
{
    whep_request_t req = {
        .method = method,
        .path = path,
        .content_type = type,
        .content_length = body != NULL ? strlen(body) : 0,
        .body = body != NULL ? body : "",
    };
    whep_handle(ep, &req, resp);
    return resp->status;
}

static void test_endpoint(void)
{
    fake_t fake = {0};
    whep_backend_t backend = {fake_start, fake_stop, fake_alive, fake_random, &fake};
    whep_endpoint_t ep;
    whep_endpoint_init(&ep, &backend, "<html>page</html>", 1024, 512, 1);
    whep_response_t r;

    CHECK(request(&ep, WHEP_METHOD_GET, "/", NULL, NULL, &r) == 200);
    CHECK(strcmp(r.content_type, "text/html; charset=utf-8") == 0 && r.body_len == 17 &&
          memcmp(r.body, "<html>page</html>", 17) == 0);
    CHECK(request(&ep, WHEP_METHOD_POST, "/", "application/sdp", OFFER, &r) == 405);
    CHECK(request(&ep, WHEP_METHOD_GET, "/nothing", NULL, NULL, &r) == 404);
    CHECK(request(&ep, WHEP_METHOD_GET, "/whep", NULL, NULL, &r) == 405);
    CHECK(strcmp(header(&r, "Allow"), "POST, OPTIONS") == 0);
    CHECK(request(&ep, WHEP_METHOD_OPTIONS, "/whep", NULL, NULL, &r) == 204);
    CHECK(strcmp(header(&r, "Accept-Post"), "application/sdp") == 0 && header(&r, "Access-Control-Allow-Methods"));
    CHECK(r.body_len == 0);

    /* Wrong or missing content type, oversized body, not an offer: 415, 413, 400, nothing started. */
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "text/plain", OFFER, &r) == 415);
    CHECK(strcmp(header(&r, "Accept-Post"), "application/sdp") == 0);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", NULL, OFFER, &r) == 415);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdpx", OFFER, &r) == 415);
    whep_request_t big = {WHEP_METHOD_POST, "/whep", "application/sdp", 4096, NULL};
    whep_handle(&ep, &big, &r);
    CHECK(r.status == 413);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", "hello", &r) == 400);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp",
                  "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n", &r) == 400);
    CHECK(strstr(r.body, "no video") != NULL);
    CHECK(fake.starts == 0);

    /* The offer: 201, the answer, a Location, CORS exposing it. Type matching ignores case and
     * parameters. */
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", " Application/SDP; charset=utf-8", OFFER, &r) == 201);
    CHECK(strcmp(r.status_line, "201 Created") == 0);
    CHECK(strcmp(r.content_type, "application/sdp") == 0);
    CHECK(r.body_len == strlen("v=0\r\nanswer 1\r\n") && memcmp(r.body, "v=0\r\nanswer 1\r\n", r.body_len) == 0);
    CHECK(strcmp(header(&r, "Location"), "/whep/0000000100000002") == 0);
    CHECK(strcmp(header(&r, "Access-Control-Expose-Headers"), "Location") == 0);
    CHECK(fake.starts == 1 && strncmp(fake.last_offer, "v=0\r\nm=video", 12) == 0);
    CHECK(fake.last_parsed.h264_payload_type == 96 && strcmp(fake.last_parsed.data_mid, "1") == 0);
    whep_response_free(&r);
    CHECK(r.owned == NULL);

    /* One session at a time. */
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 503);
    CHECK(strcmp(header(&r, "Retry-After"), "5") == 0);
    CHECK(fake.starts == 1);
    /* No trickle ICE, no restart: PATCH is 405; a stranger's session is 404; ours is deleted. */
    CHECK(request(&ep, WHEP_METHOD_PATCH, "/whep/0000000100000002", "application/trickle-ice-sdpfrag", "a=x", &r) ==
          405);
    CHECK(strcmp(header(&r, "Allow"), "DELETE") == 0);
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/0000000100000003", NULL, NULL, &r) == 404);
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/00000001000000020", NULL, NULL, &r) == 404);
    CHECK(fake.stops == 0);
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/0000000100000002", NULL, NULL, &r) == 200);
    CHECK(fake.stops == 1);
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/0000000100000002", NULL, NULL, &r) == 404);
    CHECK(fake.stops == 1);

    /* A session that ended by itself (the peer left without DELETE) frees the endpoint. */
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
    CHECK(strcmp(header(&r, "Location"), "/whep/0000000300000004") == 0);
    whep_response_free(&r);
    fake.alive = false;
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/0000000300000004", NULL, NULL, &r) == 404);
    CHECK(fake.stops == 2); /* what was left of it was released */
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
    whep_response_free(&r);
    CHECK(request(&ep, WHEP_METHOD_DELETE, "/whep/0000000500000006", NULL, NULL, &r) == 200);

    /* The stack refusing the offer is 400, failing otherwise 500; neither leaves a session. */
    fake.next_result = WHEP_START_BAD_OFFER;
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 400);
    fake.next_result = WHEP_START_FAILED;
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 500);
    CHECK(r.owned == NULL);
    fake.next_result = WHEP_START_OK;
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
    whep_response_free(&r);
    CHECK(request(&ep, WHEP_METHOD_OTHER, "/whep/0000000700000008", NULL, NULL, &r) == 405);

    CHECK(whep_method_from_name("DELETE") == WHEP_METHOD_DELETE);
    CHECK(whep_method_from_name("PATCH") == WHEP_METHOD_PATCH);
    CHECK(whep_method_from_name("delete") == WHEP_METHOD_OTHER);
    CHECK(whep_method_from_name(NULL) == WHEP_METHOD_OTHER);
}

/* CONFIG_WHEP_MAX_SESSIONS = 3: three sessions at once, each its own slot and Location; a fourth
 * POST gets 503 with Retry-After and starts nothing; one viewer leaving (DELETE) frees its slot
 * for the next while the others run on; a session that ended by itself frees its slot too. */
static void test_sessions(void)
{
    fake_t fake = {0};
    whep_backend_t backend = {fake_start, fake_stop, fake_alive, fake_random, &fake};
    whep_endpoint_t ep;
    whep_endpoint_init(&ep, &backend, "", 1024, 512, 3);
    whep_response_t r;
    char location[3][40];
    for (int i = 0; i < 3; ++i) {
        CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
        CHECK(fake.last_slot == i);
        snprintf(location[i], sizeof(location[i]), "%s", header(&r, "Location"));
        whep_response_free(&r);
    }
    CHECK(strcmp(location[0], location[1]) != 0 && strcmp(location[1], location[2]) != 0);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 503);
    CHECK(strcmp(header(&r, "Retry-After"), "5") == 0 && strstr(r.body, "every session") != NULL);
    CHECK(fake.starts == 3 && fake.stops == 0);
    /* The second viewer leaves; the others still run; the next viewer takes its slot. */
    CHECK(request(&ep, WHEP_METHOD_DELETE, location[1], NULL, NULL, &r) == 200);
    CHECK(fake.stops == 1 && fake.last_slot == 1 && fake.alive_slot[0] && fake.alive && fake.alive_slot[2]);
    CHECK(request(&ep, WHEP_METHOD_DELETE, location[1], NULL, NULL, &r) == 404);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
    CHECK(fake.last_slot == 1);
    snprintf(location[1], sizeof(location[1]), "%s", header(&r, "Location"));
    whep_response_free(&r);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 503);
    /* The third one's peer went away without DELETE: its slot is released and taken. */
    fake.alive_slot[2] = false;
    CHECK(request(&ep, WHEP_METHOD_DELETE, location[2], NULL, NULL, &r) == 404);
    CHECK(request(&ep, WHEP_METHOD_POST, "/whep", "application/sdp", OFFER, &r) == 201);
    CHECK(fake.last_slot == 2);
    whep_response_free(&r);
    /* Every other session's Location still works. */
    CHECK(request(&ep, WHEP_METHOD_DELETE, location[0], NULL, NULL, &r) == 200);
    CHECK(request(&ep, WHEP_METHOD_DELETE, location[1], NULL, NULL, &r) == 200);
    /* max_sessions is clamped to 1 .. WHEP_SESSIONS_MAX. */
    whep_endpoint_init(&ep, &backend, "", 1024, 512, 0);
    CHECK(ep.max_sessions == 1);
    whep_endpoint_init(&ep, &backend, "", 1024, 512, WHEP_SESSIONS_MAX + 5);
    CHECK(ep.max_sessions == WHEP_SESSIONS_MAX);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OFFERS_DIR\n", argv[0]);
        return 2;
    }
    test_real_offers(argv[1]);
    test_offer_shapes();
    test_endpoint();
    test_sessions();
    printf("whep_endpoint: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
