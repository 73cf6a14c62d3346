/* Guest instruction counter for qemu-user (QEMU plugin API v1, QEMU 7.2).
 * Counts every executed guest instruction with an inline add per translation block
 * (cheap: no helper call). Prints the total at exit, and whenever the guest issues the
 * marker syscall (number MARKER_NR, default 4095 on aarch64, which qemu answers ENOSYS),
 * prints "stepcount marker <arg0> <count>" so a guest program can bracket a region:
 *     libc.syscall(4095, tag)  ...work...  libc.syscall(4095, tag + 1)
 * Args: marker=<nr>. The counter is shared by all guest threads (inline adds are not
 * atomic: run the measured code on one thread for exact counts). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insn_count;
static int64_t marker_nr = 4095;

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num == marker_nr) {
        char buf[128];
        snprintf(buf, sizeof buf, "stepcount marker %" PRIu64 " %" PRIu64 "\n", a1, insn_count);
        qemu_plugin_outs(buf);
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    char buf[64];
    snprintf(buf, sizeof buf, "stepcount total %" PRIu64 "\n", insn_count);
    qemu_plugin_outs(buf);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "marker=")) {
            marker_nr = strtoll(argv[i] + 7, NULL, 0);
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
