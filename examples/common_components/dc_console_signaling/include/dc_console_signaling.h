#pragma once

#include "rtc/rtc.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Fills the network part of `config` from menuconfig ("Example signaling and ICE"): the STUN
 * server (none on the linux target, whose tests stay on loopback) and the address ICE binds to.
 * Strings point to static storage.
 */
void dc_console_signaling_configure(rtcConfiguration *config);

/*
 * Creates the offer on `pc` (its data channels and tracks must exist already, and the
 * PeerConnection must be created with disableAutoNegotiation so that this is the only offer),
 * waits for ICE gathering to finish, prints the complete offer between markers, then reads the
 * answer from the console (paste it, then a line with only `END`) and applies it. Returns 0 or a
 * negative rtc error code.
 */
int dc_console_signaling_exchange(int pc);

#ifdef __cplusplus
}
#endif
