/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * What differs between the architectures ksight runs on, in one place: the syscall numbers
 * the programs test for, the syscalls' entry points (fexit), the syscall number saved in
 * pt_regs, where user addresses end, the kernel stack's size. Registers are read through
 * libbpf's PT_REGS_* macros (bpf_tracing.h), which follow __TARGET_ARCH_*: libbpf-cargo sets
 * it from cargo's target, and build.rs picks include/ARCH/vmlinux.h the same way.
 */
#ifndef KSIGHT_ARCH_BPF_H
#define KSIGHT_ARCH_BPF_H

#if defined(__TARGET_ARCH_x86)
/* arch/x86/entry/syscalls/syscall_64.tbl */
#define KS_NR_WRITE 1
#define KS_NR_OPEN 2
#define KS_NR_EXECVE 59
#define KS_NR_EXIT 60
#define KS_NR_CREAT 85
#define KS_NR_EXIT_GROUP 231
#define KS_NR_OPENAT 257
#define KS_NR_EXECVEAT 322
#define KS_NR_OPENAT2 437
/* The syscall wrapper a syscall enters by (fexit target). */
#define KS_SYSCALL(name) "__x64_sys_" #name
/* The syscall number the entry code saved: read directly (BTF pointer) or with CO-RE. */
#define KS_SYSCALL_NR(regs) ((regs)->orig_ax)
#define KS_SYSCALL_NR_CORE(regs) BPF_CORE_READ(regs, orig_ax)
/* User addresses are below 2^47 (4-level paging; the kernel's start at 0xffff8...). */
#define KS_USER_ADDRESS_BITS 47
#define KS_THREAD_SIZE 16384

#elif defined(__TARGET_ARCH_arm64)
/* include/uapi/asm-generic/unistd.h: arm64 has neither open nor creat (openat does both). */
#define KS_NR_OPENAT 56
#define KS_NR_WRITE 64
#define KS_NR_EXIT 93
#define KS_NR_EXIT_GROUP 94
#define KS_NR_EXECVE 221
#define KS_NR_EXECVEAT 281
#define KS_NR_OPENAT2 437
#define KS_SYSCALL(name) "__arm64_sys_" #name
#define KS_SYSCALL_NR(regs) ((regs)->syscallno)
#define KS_SYSCALL_NR_CORE(regs) BPF_CORE_READ(regs, syscallno)
/* TTBR0 covers user space: at most 52 bits of it (the kernel's half starts at 0xfff...). */
#define KS_USER_ADDRESS_BITS 52
/* THREAD_SIZE without KASAN (Debian's and the clouds' kernels). */
#define KS_THREAD_SIZE 16384

#else
#error "ksight has no definitions for this architecture (include/arch.bpf.h)"
#endif

#endif
