// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Never loaded: anchors every ABI struct in BTF so the skeleton generates its Rust types. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "abi.h"

struct ks_slot_cache ks_abi_slot_cache;
struct ks_config ks_abi_config;
struct ks_ctl ks_abi_ctl;
struct ks_comm ks_abi_comm;
struct ks_syscall_row ks_abi_syscall_row;
struct ks_errno_key ks_abi_errno_key;
struct ks_proc_key ks_abi_proc_key;
struct ks_file_key ks_abi_file_key;
struct ks_hist ks_abi_hist;
struct ks_signal_key ks_abi_signal_key;
struct ks_comm_key ks_abi_comm_key;
struct ks_block_key ks_abi_block_key;
enum ks_loss ks_abi_loss;
enum ks_cgroup_mode ks_abi_cgroup_mode;
enum ks_tcp_counter ks_abi_tcp_counter;
/* trace events */
struct ks_trace_config ks_abi_trace_config;
struct ks_ev_hdr ks_abi_ev_hdr;
struct ks_ev_exec ks_abi_ev_exec;
struct ks_ev_open ks_abi_ev_open;
struct ks_ev_fork ks_abi_ev_fork;
struct ks_ev_exit ks_abi_ev_exit;
struct ks_ev_signal ks_abi_ev_signal;
struct ks_ev_tcp ks_abi_ev_tcp;
struct ks_systop_key ks_abi_systop_key;
struct ks_systop_val ks_abi_systop_val;
enum ks_ev_kind ks_abi_ev_kind;
enum ks_trace_filter ks_abi_trace_filter;
enum ks_tcp_what ks_abi_tcp_what;
enum ks_af ks_abi_af;
enum ks_proc_kind ks_abi_proc_kind;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
