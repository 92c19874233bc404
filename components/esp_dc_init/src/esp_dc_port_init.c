/*
 * esp_dc_port_init(): the policy's run-time half. Compile-time knobs are definitions on the
 * generated components; the run-time ones, which libdatachannel only takes through its API, are
 * the rows of esp_dc_runtime_knobs.h (generated from the knob catalogue, xtask/src/policy.rs),
 * so none is named here.
 */
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_pthread.h"
#include "sdkconfig.h"

#include "rtc/rtc.h"

#include "esp_dc_init.h"

static const char *TAG = "esp_dc_port";

/* Expands one row of esp_dc_runtime_knobs.h to `api(field, name, kconfig)`; each use defines
 * what the three apis become. */
#define ESP_DC_BY_API(api, field, name, kconfig, lab_env, upstream) api(field, name, kconfig)

esp_dc_port_settings_t esp_dc_port_settings(void)
{
    esp_dc_port_settings_t s = {
        .thread_stack_bytes = CONFIG_ESP_DC_PORT_THREAD_STACK_BYTES,
#if CONFIG_ESP_DC_PORT_THREAD_STACK_PSRAM
        .thread_stack_caps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT,
#elif CONFIG_ESP_DC_PORT_THREAD_STACK_INTERNAL
        .thread_stack_caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT,
#else
        .thread_stack_caps = 0,
#endif
#if CONFIG_ESP_DC_PORT_NEW_PLACEMENT_PSRAM
        .new_caps = MALLOC_CAP_SPIRAM,
#elif CONFIG_ESP_DC_PORT_NEW_PLACEMENT_INTERNAL
        .new_caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT,
#else
        .new_caps = MALLOC_CAP_DEFAULT,
#endif
    };
    /* Every run-time knob's Kconfig value (libdatachannel's Kconfig declares each one). */
#define ESP_DC_SETTING(field, name, kconfig) s.name = CONFIG_##kconfig;
#define SCTP_SETTINGS ESP_DC_SETTING
#define CONFIGURATION ESP_DC_SETTING
#define NACK_RESPONDER ESP_DC_SETTING
    ESP_DC_RUNTIME_KNOBS(ESP_DC_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
    return s;
}

#if CONFIG_ESP_DC_PORT_APPLY_SCTP_SETTINGS
/* rtcSetSctpSettings with the SCTP_SETTINGS rows; 0 (libdatachannel's default) in every other field. */
static esp_err_t apply_sctp_settings(const esp_dc_port_settings_t *s)
{
    rtcSctpSettings sctp;
    memset(&sctp, 0, sizeof(sctp));
#define SCTP_SETTINGS(field, name, kconfig) sctp.field = s->name;
#define CONFIGURATION(field, name, kconfig)
#define NACK_RESPONDER(field, name, kconfig)
    ESP_DC_RUNTIME_KNOBS(ESP_DC_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
    if (rtcSetSctpSettings(&sctp) < 0) {
        ESP_LOGE(TAG, "rtcSetSctpSettings refused the policy's SCTP settings");
        return ESP_ERR_INVALID_STATE;
    }
    return ESP_OK;
}
#endif

esp_err_t esp_dc_port_init(void)
{
    esp_dc_port_settings_t s = esp_dc_port_settings();

    /* Threads started from this task afterwards (libdatachannel's pool at the first
     * PeerConnection, usrsctp's timer thread) take this configuration, and inherit_cfg hands it
     * on to the threads they start (libjuice's connection threads). */
    esp_pthread_cfg_t cfg = esp_pthread_get_default_config();
    cfg.stack_size = s.thread_stack_bytes;
    cfg.prio = CONFIG_ESP_DC_PORT_THREAD_PRIORITY;
    cfg.inherit_cfg = true;
    cfg.thread_name = "esp_dc";
    if (s.thread_stack_caps != 0) {
        cfg.stack_alloc_caps = s.thread_stack_caps;
    }
    esp_err_t err = esp_pthread_set_cfg(&cfg);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_pthread_set_cfg failed: %s", esp_err_to_name(err));
        return err;
    }

#if CONFIG_ESP_DC_PORT_APPLY_SCTP_SETTINGS
    err = apply_sctp_settings(&s);
    if (err != ESP_OK) {
        return err;
    }
#endif

    ESP_LOGI(TAG, "threads: %u-byte stacks (caps 0x%x); operator new caps 0x%x", (unsigned)s.thread_stack_bytes,
             (unsigned)s.thread_stack_caps, (unsigned)s.new_caps);
#define ESP_DC_LOG_KNOB(field, name, kconfig) ESP_LOGI(TAG, "knob %s = %d", #name, s.name);
#define SCTP_SETTINGS ESP_DC_LOG_KNOB
#define CONFIGURATION ESP_DC_LOG_KNOB
#define NACK_RESPONDER ESP_DC_LOG_KNOB
    ESP_DC_RUNTIME_KNOBS(ESP_DC_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
    return ESP_OK;
}

void esp_dc_port_configure(rtcConfiguration *config)
{
    const esp_dc_port_settings_t s = esp_dc_port_settings();
#define SCTP_SETTINGS(field, name, kconfig)
#define CONFIGURATION(field, name, kconfig) config->field = s.name;
#define NACK_RESPONDER(field, name, kconfig)
    ESP_DC_RUNTIME_KNOBS(ESP_DC_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
}

int esp_dc_port_chain_nack_responder(int track)
{
    const esp_dc_port_settings_t s = esp_dc_port_settings();
    unsigned max_stored_packets = 0;
#define SCTP_SETTINGS(field, name, kconfig)
#define CONFIGURATION(field, name, kconfig)
#define NACK_RESPONDER(field, name, kconfig) max_stored_packets = (unsigned)s.name;
    ESP_DC_RUNTIME_KNOBS(ESP_DC_BY_API)
#undef SCTP_SETTINGS
#undef CONFIGURATION
#undef NACK_RESPONDER
    return rtcChainRtcpNackResponder(track, max_stored_packets);
}
