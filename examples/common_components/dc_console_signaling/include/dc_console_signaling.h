#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Creates the offer on `pc` (its data channels and tracks must exist already), waits for ICE
 * gathering to finish, prints the complete offer between markers, then reads the answer from the
 * console (paste it, then a line with only `END`) and applies it. Returns 0 or a negative rtc
 * error code.
 */
int dc_console_signaling_exchange(int pc);

#ifdef __cplusplus
}
#endif
