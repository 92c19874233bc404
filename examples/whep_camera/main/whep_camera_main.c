/*
 * WHEP camera: the device serves a page and a WHEP endpoint (draft-ietf-wish-whep) over HTTP with
 * esp_http_server. Open http://<device>/ in a browser, press Connect: the page offers (recvonly
 * video and a data channel "echo"), POSTs the offer to /whep, gets 201 Created with the answer
 * and a Location for the session, and plays the H.264 stream (moving colour bars from
 * h264_testsrc; put a camera and encoder there). Every data-channel message comes back. Any WHEP
 * player can pull the stream from http://<device>/whep; DELETE on the Location ends the session.
 *
 * The browser offers, so the device answers and is the DTLS client: current browsers' post-quantum
 * ClientHello (which mbedTLS 3.6's DTLS server refuses, README "Interoperability") never reaches it.
 * CONFIG_WHEP_MAX_SESSIONS viewers at once (default 1), each its own PeerConnection and its own
 * stream from the first frame (a key frame); one more POST gets 503 with Retry-After until a
 * session is deleted or has failed. The answer is sent
 * once ICE gathering is complete (no trickle ICE, so PATCH gets 405), or after
 * CONFIG_WHEP_CAMERA_GATHER_TIMEOUT_MS with the candidates found by then.
 *
 * The HTTP and SDP decisions are in whep_endpoint (plain C, tested on the host); this file is
 * the glue: esp_http_server in front, libdatachannel behind.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dc_console_signaling.h" /* dc_console_signaling_configure(): STUN server, bind address */
#include "esp_dc_init.h"
#include "esp_event.h"
#include "esp_heap_caps.h"
#include "esp_http_server.h"
#include "esp_log.h"
#include "esp_random.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "h264_track_sender.h"
#include "rtc/rtc.h"
#include "sdkconfig.h"
#include "whep_endpoint.h"
#if !CONFIG_IDF_TARGET_LINUX
#include "esp_netif.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"
#endif

static const char *TAG = "whep_camera";

/* The page, embedded by main/CMakeLists.txt (EMBED_TXTFILES: NUL-terminated). */
extern const char page_html_start[] asm("_binary_page_html_start");

#define FPS 10
/* Libdatachannel's answer to a browser's offer (one video section, one data channel, a few
 * candidates) is about 1.5 KB. */
#define ANSWER_CAPACITY 4096

/*
 * One session per slot of the endpoint. The HTTP server's task creates and deletes them
 * (whep_endpoint calls start and stop with the slot), the main task sends frames on them: `lock`
 * (one for all) keeps the two apart. libdatachannel's callbacks only touch the atomics: on the
 * linux target they run on plain pthreads, where a FreeRTOS call would switch tasks from the wrong
 * thread (README "Decisions").
 */
typedef struct {
    int slot;
    int pc;    /* -1: none */
    int track; /* -1: none (the offer had no video) */
    atomic_bool gathered;
    atomic_int state; /* last rtcState */
    atomic_uint echoed;
    h264_track_sender_t sender; /* this session's frames: its own clock, a key frame first */
} session_t;

static SemaphoreHandle_t s_lock;
static session_t s_sessions[CONFIG_WHEP_MAX_SESSIONS];

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_state(int pc, rtcState state, void *ptr)
{
    (void)pc;
    session_t *s = ptr;
    atomic_store(&s->state, (int)state);
}

static void on_gathering(int pc, rtcGatheringState state, void *ptr)
{
    (void)pc;
    session_t *s = ptr;
    if (state == RTC_GATHERING_COMPLETE) {
        atomic_store(&s->gathered, true);
    }
}

static void on_message(int dc, const char *message, int size, void *ptr)
{
    session_t *s = ptr;
    /* size < 0: a NUL-terminated string; echo it as a string so the browser sees text. */
    if (rtcSendMessage(dc, message, size) >= 0) {
        atomic_fetch_add(&s->echoed, 1);
    }
}

static void on_datachannel(int pc, int dc, void *ptr)
{
    (void)pc;
    rtcSetUserPointer(dc, ptr);
    rtcSetMessageCallback(dc, on_message);
}

/* Deletes the session's PeerConnection; the caller holds the lock. */
static void session_delete(session_t *s)
{
    if (s->pc >= 0) {
        rtcDeletePeerConnection(s->pc); /* its tracks and channels go with it */
        ESP_LOGI(TAG, "session ended (slot %d) after %u echoed messages; internal free %u, PSRAM free %u", s->slot,
                 (unsigned)atomic_load(&s->echoed), (unsigned)heap_caps_get_free_size(MALLOC_CAP_INTERNAL),
                 (unsigned)heap_caps_get_free_size(MALLOC_CAP_SPIRAM));
    }
    s->pc = -1;
    s->track = -1;
}

static int add_video_track(int pc, const whep_offer_t *offer)
{
    uint32_t ssrc = esp_random();
    rtcTrackInit init = {
        .direction = RTC_DIRECTION_SENDONLY,
        .codec = RTC_CODEC_H264,
        .payloadType = offer->h264_payload_type,
        .ssrc = ssrc,
        .mid = offer->video_mid,
        .name = "video",
        .msid = "esp32",
        .trackId = "video",
        /* The offer's own fmtp for that payload type, so the answer mirrors it. */
        .profile = offer->h264_fmtp[0] != '\0' ? offer->h264_fmtp : "packetization-mode=1",
    };
    int track = rtcAddTrackEx(pc, &init);
    rtcPacketizerInit packetizer = {
        .ssrc = ssrc,
        .cname = "esp32",
        .payloadType = (uint8_t)offer->h264_payload_type,
        .clockRate = 90000,
        .nalSeparator = RTC_NAL_SEPARATOR_START_SEQUENCE,
    };
    if (track < 0 || rtcSetH264Packetizer(track, &packetizer) < 0 || rtcChainRtcpSrReporter(track) < 0 ||
        esp_dc_port_chain_nack_responder(track) < 0) {
        return -1;
    }
    return track;
}

/* whep_backend_t.start: the HTTP server's task, one offer. */
static whep_start_result_t session_start(void *ctx, int slot, const char *offer, const whep_offer_t *parsed,
                                         char *answer, size_t answer_size)
{
    session_t *s = &((session_t *)ctx)[slot];
    xSemaphoreTake(s_lock, portMAX_DELAY);
    session_delete(s); /* whep_endpoint stops a session before starting one; this is belt and braces */
    atomic_store(&s->gathered, false);
    atomic_store(&s->state, (int)RTC_NEW);
    atomic_store(&s->echoed, 0);

    rtcConfiguration config;
    memset(&config, 0, sizeof(config));
    dc_console_signaling_configure(&config); /* STUN server and bind address from menuconfig */
    esp_dc_port_configure(&config); /* the policy's knobs: maxMessageSize */
    /* One answer, made below once the video track sits on the offered mid. */
    config.disableAutoNegotiation = true;
    whep_start_result_t result = WHEP_START_FAILED;
    int pc = rtcCreatePeerConnection(&config);
    if (pc < 0) {
        ESP_LOGE(TAG, "rtcCreatePeerConnection failed: %d", pc);
        goto out;
    }
    s->pc = pc;
    rtcSetUserPointer(pc, s);
    rtcSetStateChangeCallback(pc, on_state);
    rtcSetGatheringStateChangeCallback(pc, on_gathering);
    rtcSetDataChannelCallback(pc, on_datachannel);
    if (rtcSetRemoteDescription(pc, offer, "offer") < 0) {
        ESP_LOGW(TAG, "libdatachannel refused the offer");
        result = WHEP_START_BAD_OFFER;
        goto out;
    }
    if (parsed->h264_payload_type >= 0) {
        s->track = add_video_track(pc, parsed);
        if (s->track < 0) {
            ESP_LOGE(TAG, "cannot set up the video track");
            goto out;
        }
    }
    if (rtcSetLocalDescription(pc, "answer") < 0) {
        ESP_LOGE(TAG, "no answer");
        goto out;
    }
    /* No trickle ICE: the answer carries every candidate, so wait for gathering to complete. */
    int64_t deadline = now_us() + (int64_t)CONFIG_WHEP_CAMERA_GATHER_TIMEOUT_MS * 1000;
    while (!atomic_load(&s->gathered) && now_us() < deadline) {
        vTaskDelay(pdMS_TO_TICKS(10));
    }
    if (!atomic_load(&s->gathered)) {
        ESP_LOGW(TAG, "ICE gathering incomplete after %d ms; answering with the candidates found so far",
                 CONFIG_WHEP_CAMERA_GATHER_TIMEOUT_MS);
    }
    int len = rtcGetLocalDescription(pc, answer, (int)answer_size);
    if (len < 0) {
        ESP_LOGE(TAG, "the answer does not fit %u bytes", (unsigned)answer_size);
        goto out;
    }
    ESP_LOGI(TAG, "session started (slot %d): video %s (payload type %d), data channel %s; answer %d bytes", slot,
             s->track >= 0 ? parsed->video_mid : "none", parsed->h264_payload_type,
             parsed->data_mid[0] != '\0' ? parsed->data_mid : "none", len);
    result = WHEP_START_OK;
out:
    if (result != WHEP_START_OK) {
        session_delete(s);
    }
    xSemaphoreGive(s_lock);
    return result;
}

/* whep_backend_t.stop: DELETE, or a session that ended by itself being cleared. */
static void session_stop(void *ctx, int slot)
{
    session_t *s = &((session_t *)ctx)[slot];
    xSemaphoreTake(s_lock, portMAX_DELAY);
    session_delete(s);
    xSemaphoreGive(s_lock);
}

static bool session_ended(int state)
{
    return state == RTC_FAILED || state == RTC_CLOSED;
}

/* whep_backend_t.alive: false once the peer went away (ICE failed, DTLS closed) or the main task
 * already cleaned up after it. */
static bool session_alive(void *ctx, int slot)
{
    session_t *s = &((session_t *)ctx)[slot];
    xSemaphoreTake(s_lock, portMAX_DELAY);
    bool alive = s->pc >= 0 && !session_ended(atomic_load(&s->state));
    xSemaphoreGive(s_lock);
    return alive;
}

static uint32_t session_random(void *ctx)
{
    (void)ctx;
    return esp_random();
}

static whep_endpoint_t s_endpoint;

/* Every request: esp_http_server -> whep_request_t -> whep_handle() -> the response. */
static esp_err_t http_handler(httpd_req_t *req)
{
    whep_request_t request = {
        .method = whep_method_from_name(http_method_str((enum http_method)req->method)),
        .content_length = req->content_len,
    };
    char path[64];
    size_t path_len = strcspn(req->uri, "?");
    snprintf(path, sizeof(path), "%.*s", (int)(path_len < sizeof(path) ? path_len : sizeof(path) - 1), req->uri);
    request.path = path;
    char content_type[64];
    if (httpd_req_get_hdr_value_str(req, "Content-Type", content_type, sizeof(content_type)) == ESP_OK) {
        request.content_type = content_type;
    }
    char *body = NULL;
    if (req->content_len > 0 && req->content_len <= s_endpoint.max_offer_bytes) {
        body = malloc(req->content_len);
        size_t got = 0;
        while (body != NULL && got < req->content_len) {
            int n = httpd_req_recv(req, body + got, req->content_len - got);
            if (n == HTTPD_SOCK_ERR_TIMEOUT) {
                continue;
            }
            if (n <= 0) {
                free(body);
                return ESP_FAIL; /* the client went away: esp_http_server closes the socket */
            }
            got += (size_t)n;
        }
        request.body = body;
    } else if (req->content_len == 0) {
        request.body = "";
    }

    whep_response_t response;
    whep_handle(&s_endpoint, &request, &response);
    free(body);
    if (request.method != WHEP_METHOD_GET || response.status != 200) {
        ESP_LOGI(TAG, "%s %s -> %s", http_method_str((enum http_method)req->method), path, response.status_line);
    }
    httpd_resp_set_status(req, response.status_line);
    if (response.content_type != NULL) {
        httpd_resp_set_type(req, response.content_type);
    }
    for (int i = 0; i < response.header_count; ++i) {
        httpd_resp_set_hdr(req, response.headers[i].name, response.headers[i].value);
    }
    esp_err_t err = httpd_resp_send(req, response.body, (ssize_t)response.body_len);
    whep_response_free(&response);
    return err;
}

static httpd_handle_t start_http_server(void)
{
    httpd_config_t config = HTTPD_DEFAULT_CONFIG();
    config.server_port = CONFIG_WHEP_CAMERA_HTTP_PORT;
#if CONFIG_IDF_TARGET_LINUX
    /* Tests on one machine run several devices at once: the port may come from the environment. */
    const char *port = getenv("WHEP_CAMERA_HTTP_PORT");
    if (port != NULL && atoi(port) > 0) {
        config.server_port = (uint16_t)atoi(port);
    }
    config.ctrl_port = config.server_port; /* its UDP control socket: UDP's port space, not TCP's */
#endif
    /* The POST handler runs libdatachannel's SDP parsing and answer on this task's stack. */
    config.stack_size = CONFIG_WHEP_CAMERA_HTTPD_STACK_SIZE;
    config.uri_match_fn = httpd_uri_match_wildcard;
    config.lru_purge_enable = true;
    config.max_resp_headers = WHEP_HEADERS_MAX + 2;
    httpd_handle_t server = NULL;
    esp_err_t err = httpd_start(&server, &config);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "httpd_start on port %u failed: %s", (unsigned)config.server_port, esp_err_to_name(err));
        return NULL;
    }
    /* One handler for every path and method: whep_endpoint routes, so 404 and 405 are its too. */
    const httpd_uri_t any = {.uri = "/*", .method = HTTP_ANY, .handler = http_handler};
    httpd_register_uri_handler(server, &any);
    ESP_LOGI(TAG, "serving the page on port %u: open http://<this device>:%u/ (WHEP endpoint " WHEP_ENDPOINT_PATH ")",
             (unsigned)config.server_port, (unsigned)config.server_port);
    return server;
}

/* The main task: frames on each session's track while it is open; clears sessions that ended. */
static void stream(void)
{
    for (;;) {
        vTaskDelay(pdMS_TO_TICKS(1000 / FPS));
        xSemaphoreTake(s_lock, portMAX_DELAY);
        for (int i = 0; i < CONFIG_WHEP_MAX_SESSIONS; ++i) {
            session_t *s = &s_sessions[i];
            if (s->pc >= 0 && session_ended(atomic_load(&s->state))) {
                session_delete(s); /* the peer left without DELETE: free the memory now */
            }
            if (s->track >= 0 && rtcIsOpen(s->track)) {
                h264_track_sender_send(&s->sender, s->track); /* a new session's track restarts the clock */
            }
        }
        xSemaphoreGive(s_lock);
    }
}

void app_main(void)
{
    /* esp_http_server posts its events (connections, requests) to the default loop; without one
     * it logs an error per event. */
    ESP_ERROR_CHECK(esp_event_loop_create_default());
#if !CONFIG_IDF_TARGET_LINUX /* the linux target runs on the host's network */
    ESP_ERROR_CHECK(nvs_flash_init());
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(example_connect()); /* prints the address to open */
#endif

    /* Before the first PeerConnection: SCTP buffers and thread stacks from the policy. */
    ESP_ERROR_CHECK(esp_dc_port_init());
    rtcInitLogger(RTC_LOG_WARNING, NULL);

    s_lock = xSemaphoreCreateMutex();
    for (int i = 0; i < CONFIG_WHEP_MAX_SESSIONS; ++i) {
        s_sessions[i].slot = i;
        s_sessions[i].pc = -1;
        s_sessions[i].track = -1;
        if (h264_track_sender_init(&s_sessions[i].sender, FPS * 10) != ESP_OK) {
            return;
        }
    }
    const whep_backend_t backend = {
        .start = session_start,
        .stop = session_stop,
        .alive = session_alive,
        .random = session_random,
        .ctx = s_sessions,
    };
    whep_endpoint_init(&s_endpoint, &backend, page_html_start, CONFIG_WHEP_CAMERA_MAX_OFFER_BYTES, ANSWER_CAPACITY,
                       CONFIG_WHEP_MAX_SESSIONS);
    if (s_lock == NULL || start_http_server() == NULL) {
        return;
    }
    ESP_LOGI(TAG, "serving up to %d viewer(s) at once", CONFIG_WHEP_MAX_SESSIONS);
    stream();
}
