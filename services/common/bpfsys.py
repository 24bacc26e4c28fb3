"""The few bpf(2) commands that tcx needs, through ctypes (Linux 6.6+).

bcc loads our programs but attaches them to TC only as clsact filters, and
pyroute2 speaks netlink, which has no tcx. A tcx link is a file descriptor:
while it is open the program runs on the hook, and when its last holder
closes it (or dies) the kernel detaches it, so a killed service leaves
nothing behind. BPF_PROG_QUERY lists what a hook runs now.

Numbers and layouts are those of include/uapi/linux/bpf.h as of 6.6 (tcx
came in 6.6, commit e420bed02507); only the fields used here are set, the
rest of the attribute stays zero as the kernel requires.
"""

import ctypes
import os
import platform
import struct

# bpf(2) is not in libc; its number per architecture (asm/unistd_64.h).
SYS_BPF = {"x86_64": 321, "aarch64": 280}

# enum bpf_cmd
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
PROG_QUERY = 16
LINK_CREATE = 28

# enum bpf_attach_type
TCX_INGRESS = 46
TCX_EGRESS = 47

# BPF_LINK_CREATE flags for tcx (bpf_mprog): the place in the hook's list.
F_BEFORE = 1 << 3
F_AFTER = 1 << 4
F_ID = 1 << 5           # relative_id is a program id (not an fd)

# A tcx hook holds at most 64 programs (BPF_MPROG_MAX in include/linux/bpf_mprog.h).
MAX_PROGS = 64
ATTR_SIZE = 128         # enough for every union bpf_attr member used here
OBJ_NAME_LEN = 16       # BPF_OBJ_NAME_LEN: names are cut to 15 characters
PROG_INFO_SIZE = 256    # struct bpf_prog_info is 232 octets in 6.6
PROG_INFO_NAME = 64     # offset of bpf_prog_info.name
LINK_INFO_SIZE = 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd, attr):
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"no bpf(2) syscall number known for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def link_create(prog_fd, ifindex, attach_type, flags=0, relative_id=0):
    """A tcx link of `prog_fd` on `ifindex`'s hook; returns the link's fd.

    Without flags the program goes last in the hook's list; F_BEFORE|F_ID
    with relative_id puts it just before that program.
    """
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=IIIII", attr, 0, prog_fd, ifindex, attach_type, flags, relative_id)
    return _bpf(LINK_CREATE, attr)


def prog_query(ifindex, attach_type):
    """[(program id, link id)] on a tcx hook, first to run first.

    Link id 0 means the program was attached without a link (BPF_PROG_ATTACH).
    Raises OSError EINVAL on kernels without tcx.
    """
    progs = (ctypes.c_uint32 * MAX_PROGS)()
    links = (ctypes.c_uint32 * MAX_PROGS)()
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    # struct { target_ifindex, attach_type, query_flags, attach_flags,
    #          prog_ids @16, count @24, prog_attach_flags @32, link_ids @40 ... }
    struct.pack_into("=II", attr, 0, ifindex, attach_type)
    struct.pack_into("=Q", attr, 16, ctypes.addressof(progs))
    struct.pack_into("=I", attr, 24, MAX_PROGS)
    struct.pack_into("=Q", attr, 40, ctypes.addressof(links))
    _bpf(PROG_QUERY, attr)
    count = min(struct.unpack_from("=I", attr, 24)[0], MAX_PROGS)
    return [(progs[i], links[i]) for i in range(count)]


def _info(fd, size):
    buf = ctypes.create_string_buffer(size)
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, fd, size, ctypes.addressof(buf))
    _bpf(OBJ_GET_INFO_BY_FD, attr)
    return buf.raw


def prog_name(prog_id):
    """The name of a loaded program by id (bcc names a program after its
    function, cut to 15 characters). Needs CAP_SYS_ADMIN: OSError EPERM without."""
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=I", attr, 0, prog_id)
    fd = _bpf(PROG_GET_FD_BY_ID, attr)
    try:
        raw = _info(fd, PROG_INFO_SIZE)[PROG_INFO_NAME:PROG_INFO_NAME + OBJ_NAME_LEN]
    finally:
        os.close(fd)
    return raw.split(b"\0", 1)[0].decode()


def link_ids(link_fd):
    """(link id, program id) of a link we hold (struct bpf_link_info: type, id, prog_id)."""
    _type, link_id, prog_id = struct.unpack_from("=III", _info(link_fd, LINK_INFO_SIZE))
    return link_id, prog_id


def prog_id(prog_fd):
    """The id of a program we hold (struct bpf_prog_info: type, id)."""
    return struct.unpack_from("=I", _info(prog_fd, PROG_INFO_SIZE), 4)[0]


def short_name(name):
    """A program name as the kernel keeps it."""
    return name[:OBJ_NAME_LEN - 1]
