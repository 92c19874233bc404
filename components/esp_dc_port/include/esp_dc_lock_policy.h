/*
 * Force-included (PUBLIC, C++ only) by the generated libdatachannel component when the policy
 * says cxx.shared_ptr_lock_policy = "mutex", together with ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX=1.
 *
 * libstdc++ chooses std::shared_ptr's lock policy in <ext/concurrence.h>:
 *     __default_lock_policy = !__GTHREADS ? _S_single
 *                           : _GLIBCXX_HAVE_ATOMIC_LOCK_POLICY ? _S_atomic : _S_mutex;
 * _GLIBCXX_HAVE_ATOMIC_LOCK_POLICY is a toolchain configure result that <bits/c++config.h>
 * #defines unconditionally, so `-U` on the command line loses to it and `-D` of anything else has
 * no effect. Including c++config.h here first (it is include-guarded) and then removing the macro
 * makes every later <memory> see _S_mutex. This has to hold for every translation unit that
 * shares shared_ptr objects with libdatachannel: std::shared_ptr<T> is mangled without its lock
 * policy, so a mismatch is a silent ODR violation, hence PUBLIC on the component.
 */
#ifndef ESP_DC_LOCK_POLICY_H
#define ESP_DC_LOCK_POLICY_H

#if defined(__cplusplus) && defined(ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX) && ESP_DC_SHARED_PTR_LOCK_POLICY_MUTEX
#include <bits/c++config.h>
#undef _GLIBCXX_HAVE_ATOMIC_LOCK_POLICY
#endif

#endif /* ESP_DC_LOCK_POLICY_H */
