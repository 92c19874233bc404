/* Cryptographic randomness from the hardware RNG for the stack's fallbacks. */
#include <stddef.h>
#include <stdint.h>

#include "esp_random.h"

#include "esp_dc_port.h"

void esp_dc_port_random(void *buf, size_t len)
{
    esp_fill_random(buf, len);
}

/* BSD interfaces usrsctp's user_environment.c uses where it finds them. */
void arc4random_buf(void *buf, size_t len)
{
    esp_fill_random(buf, len);
}

uint32_t arc4random(void)
{
    return esp_random();
}
