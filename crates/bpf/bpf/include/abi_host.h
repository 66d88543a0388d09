/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Kernel integer types for host builds of the shared headers. */
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t __s32;
typedef int64_t __s64;
/* The host compiler's architecture, in libbpf's words (abi.h has per-architecture fields). */
#if defined(__aarch64__) && !defined(__TARGET_ARCH_arm64)
#define __TARGET_ARCH_arm64
#endif
#include "abi.h"
