/*
 * TCG plugin for qemu-aarch64 (user mode): count guest instructions, and among them the
 * Armv8.2 dot-product instructions (SDOT/UDOT, vector and by-element), and print both
 * counters whenever the guest makes a marker system call.
 *
 * Counting is inline (no helper call per block), per vCPU (a guest thread is a vCPU in user
 * mode). The guest marks the edge of a region with syscall(MARKER_SYSCALL, label): an
 * unallocated number, so the kernel-side emulation just returns ENOSYS, while the plugin
 * sees the call before that and writes one line to QEMU's log (-d plugin -D FILE):
 *
 *     mark LABEL vcpu V insns N dot D all_insns A all_dot B
 *
 * N and D are the marking thread's own counters, A and B the sums over all threads (a
 * worker thread spinning between marks shows up as A - N). At exit it writes the totals:
 *
 *     total insns A dot D
 *
 * The line format is parsed by tools/arm_cost.py (parse_plugin_log).
 */
#include <glib.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Far above any aarch64 Linux syscall number; kept in step with tools/arm64/cost_guest.py. */
#define MARKER_SYSCALL 0xEEEE

typedef struct {
    uint64_t insns;
    uint64_t dot;
} Counters;

static struct qemu_plugin_scoreboard *counters;
static qemu_plugin_u64 insns;
static qemu_plugin_u64 dots;

/* SDOT/UDOT (vector), size 10: 0 Q U 01110 10 0 Rm 100101 Rn Rd. */
static gboolean is_dot_vector(uint32_t op) { return (op & 0x9FE0FC00u) == 0x0E809400u; }
/* SDOT/UDOT (by element), size 10: 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd. */
static gboolean is_dot_element(uint32_t op) { return (op & 0x9FC0F400u) == 0x0F80E000u; }

static void tb_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t dot_in_block = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t op = 0;
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_data(insn, &op, sizeof(op)) == sizeof(op)
            && (is_dot_vector(op) || is_dot_element(op))) {
            dot_in_block++;
        }
    }
    /* A block runs to its end unless it faults; faults are rare enough not to matter. */
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, insns, n);
    if (dot_in_block) {
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, dots,
                                                          dot_in_block);
    }
}

static void syscall_entered(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                            uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                            uint64_t a7, uint64_t a8)
{
    if (num != MARKER_SYSCALL) {
        return;
    }
    g_autofree gchar *line = g_strdup_printf(
        "mark %" PRIu64 " vcpu %u insns %" PRIu64 " dot %" PRIu64 " all_insns %" PRIu64
        " all_dot %" PRIu64 "\n",
        a1, vcpu, qemu_plugin_u64_get(insns, vcpu), qemu_plugin_u64_get(dots, vcpu),
        qemu_plugin_u64_sum(insns), qemu_plugin_u64_sum(dots));
    qemu_plugin_outs(line);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    g_autofree gchar *line = g_strdup_printf("total insns %" PRIu64 " dot %" PRIu64 "\n",
                                             qemu_plugin_u64_sum(insns), qemu_plugin_u64_sum(dots));
    qemu_plugin_outs(line);
    qemu_plugin_scoreboard_free(counters);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    if (argc != 0) {
        fprintf(stderr, "insn_regions: takes no arguments (got '%s')\n", argv[0]);
        return -1;
    }
    counters = qemu_plugin_scoreboard_new(sizeof(Counters));
    insns = qemu_plugin_scoreboard_u64_in_struct(counters, Counters, insns);
    dots = qemu_plugin_scoreboard_u64_in_struct(counters, Counters, dot);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_translated);
    qemu_plugin_register_vcpu_syscall_cb(id, syscall_entered);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
