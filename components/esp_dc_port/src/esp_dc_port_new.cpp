// Replacement of every operator new/delete form so that C++ allocations (libdatachannel, plog,
// the application's STL containers) follow the policy's cxx.new_placement. Without it the seed
// saw std::vector and std::string buffers of the stack land in internal RAM.
#include <cstddef>
#include <cstdlib>
#include <new>

#include "esp_heap_caps.h"
#include "sdkconfig.h"

#include "esp_dc_port_alloc.h"

#if defined(ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX) != defined(CONFIG_ESP_DC_PORT_SHARED_PTR_LOCK_POLICY_MUTEX)
#error "shared_ptr lock policy: sdkconfig and the libdatachannel component disagree; run `cargo xtask configure`"
#endif

namespace {

#if CONFIG_ESP_DC_PORT_NEW_PLACEMENT_PSRAM
constexpr uint32_t kNewCaps = MALLOC_CAP_SPIRAM;
#elif CONFIG_ESP_DC_PORT_NEW_PLACEMENT_INTERNAL
constexpr uint32_t kNewCaps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
#else
constexpr uint32_t kNewCaps = MALLOC_CAP_DEFAULT;
#endif

void *allocate(std::size_t size) noexcept
{
    // operator new(0) must return a unique pointer.
    return esp_dc_port_malloc(size ? size : 1, kNewCaps, ESP_DC_COMPONENT_OTHER);
}

void *allocate_aligned(std::size_t size, std::align_val_t align) noexcept
{
    std::size_t alignment = static_cast<std::size_t>(align);
    if (alignment < sizeof(void *)) {
        alignment = sizeof(void *);
    }
    if (size == 0) {
        size = 1;
    }
    uint32_t caps = kNewCaps == MALLOC_CAP_DEFAULT ? MALLOC_CAP_8BIT : kNewCaps;
    void *p = heap_caps_aligned_alloc(alignment, size, caps);
#if CONFIG_ESP_DC_PORT_ALLOC_FALLBACK
    if (p == nullptr) {
        p = heap_caps_aligned_alloc(alignment, size, MALLOC_CAP_8BIT);
    }
#endif
    return p;
}

// Standard new loops on the new_handler before throwing; keep that contract.
template <typename F> void *allocate_or_throw(F attempt)
{
    for (;;) {
        if (void *p = attempt()) {
            return p;
        }
        std::new_handler handler = std::get_new_handler();
        if (handler == nullptr) {
#if __cpp_exceptions
            throw std::bad_alloc();
#else
            std::abort();
#endif
        }
        handler();
    }
}

} // namespace

extern "C" {
// Referenced with `-u` from CMakeLists.txt so this object is linked before libstdc++'s.
int esp_dc_port_operator_new_linked = 1;
}

void *operator new(std::size_t size)
{
    return allocate_or_throw([&] { return allocate(size); });
}
void *operator new[](std::size_t size)
{
    return allocate_or_throw([&] { return allocate(size); });
}
void *operator new(std::size_t size, const std::nothrow_t &) noexcept
{
    return allocate(size);
}
void *operator new[](std::size_t size, const std::nothrow_t &) noexcept
{
    return allocate(size);
}
void *operator new(std::size_t size, std::align_val_t align)
{
    return allocate_or_throw([&] { return allocate_aligned(size, align); });
}
void *operator new[](std::size_t size, std::align_val_t align)
{
    return allocate_or_throw([&] { return allocate_aligned(size, align); });
}
void *operator new(std::size_t size, std::align_val_t align, const std::nothrow_t &) noexcept
{
    return allocate_aligned(size, align);
}
void *operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t &) noexcept
{
    return allocate_aligned(size, align);
}

// ESP-IDF's free() (heap_caps_free) releases blocks of any heap, aligned ones included.
void operator delete(void *p) noexcept
{
    free(p);
}
void operator delete[](void *p) noexcept
{
    free(p);
}
void operator delete(void *p, const std::nothrow_t &) noexcept
{
    free(p);
}
void operator delete[](void *p, const std::nothrow_t &) noexcept
{
    free(p);
}
void operator delete(void *p, std::size_t) noexcept
{
    free(p);
}
void operator delete[](void *p, std::size_t) noexcept
{
    free(p);
}
void operator delete(void *p, std::align_val_t) noexcept
{
    heap_caps_free(p);
}
void operator delete[](void *p, std::align_val_t) noexcept
{
    heap_caps_free(p);
}
void operator delete(void *p, std::size_t, std::align_val_t) noexcept
{
    heap_caps_free(p);
}
void operator delete[](void *p, std::size_t, std::align_val_t) noexcept
{
    heap_caps_free(p);
}
void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
    heap_caps_free(p);
}
void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept
{
    heap_caps_free(p);
}
