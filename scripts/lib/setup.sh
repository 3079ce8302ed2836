# shellcheck shell=bash disable=SC2034 # variables here are used by the sourcing scripts
# Shared set-up for scripts/{build,run,test,bench}: source it, then call
# rhv_setup. Installs what a fresh Debian 12 machine lacks (as root), and is
# quick when everything is already there (no apt, no network).
#
# Sets RHV_ROOT (the repository) and cds there.

RHV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export RHV_ROOT
cd "$RHV_ROOT" || exit 1

# cargo/rustup live in ~/.cargo/bin on a rustup install; make sure a
# non-login shell (CI) finds them.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

rhv_log() { printf '==> %s\n' "$*" >&2; }
rhv_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Each needed thing, as "test:what:package". test is 'cmd' (on PATH) or
# 'file' (exists). qemu-system-x86 pulls in SeaBIOS; ipxe-qemu holds the
# e1000 option ROM that PXE boot needs; grub-pc-bin the BIOS GRUB that
# grub-mkrescue/grub-mknetdir put on the images; xorriso writes the ISO;
# mtools is only used by grub-mkrescue for EFI images but is cheap;
# binutils gives objcopy for the bench's stripped size; gcc and libc6-dev
# are the linker and C runtime that cargo needs for host programs (tests,
# image tools); curl and ca-certificates fetch rustup when Rust is missing.
RHV_REQUIREMENTS=(
    "cmd:cc:gcc"
    "file:/usr/lib/x86_64-linux-gnu/crt1.o:libc6-dev"
    "cmd:curl:curl"
    "file:/etc/ssl/certs/ca-certificates.crt:ca-certificates"
    "cmd:qemu-system-x86_64:qemu-system-x86"
    "file:/usr/share/seabios/bios-256k.bin:seabios"
    "file:/usr/lib/ipxe/qemu/efi-e1000.rom:ipxe-qemu"
    "cmd:grub-mkrescue:grub-common"
    "cmd:grub-mknetdir:grub-common"
    "file:/usr/lib/grub/i386-pc/moddep.lst:grub-pc-bin"
    "cmd:xorriso:xorriso"
    "cmd:mformat:mtools"
    "cmd:objcopy:binutils"
    "cmd:ip:iproute2"
    "cmd:bridge:iproute2"
    "cmd:ping:iputils-ping"
    "cmd:nc:netcat-openbsd"
    "cmd:ganesha.nfsd:nfs-ganesha"
    "file:/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so:nfs-ganesha-vfs"
    "cmd:rpcbind:rpcbind"
    "cmd:nfs-cat:libnfs-utils"
    "cmd:python3:python3"
)

# Prints the packages whose files are missing, space separated.
rhv_missing_packages() {
    local req kind what pkg missing=()
    for req in "${RHV_REQUIREMENTS[@]}"; do
        IFS=: read -r kind what pkg <<<"$req"
        case "$kind" in
            cmd) command -v "$what" >/dev/null 2>&1 && continue ;;
            file) [ -e "$what" ] && continue ;;
        esac
        case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    done
    echo "${missing[*]}"
}

rhv_install_packages() {
    local missing
    missing="$(rhv_missing_packages)"
    [ -z "$missing" ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || rhv_die "missing packages ($missing) and not root: install them with apt-get"
        sudo=(sudo)
    fi
    rhv_log "installing Debian packages: $missing"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        rhv_die "apt-get update failed"
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
        rhv_die "apt-get install $missing failed"
    missing="$(rhv_missing_packages)"
    [ -z "$missing" ] || rhv_die "still missing after apt-get install: $missing"
}

rhv_install_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        # A fresh Debian 12 has no Rust (and its rustc is too old for the
        # pinned toolchain): install rustup as its site documents, with no
        # default toolchain; rust-toolchain.toml then picks the version.
        [ "$(id -u)" -eq 0 ] || rhv_die "cargo not found: install Rust with rustup (https://rustup.rs), or run as root"
        rhv_log "installing rustup (https://sh.rustup.rs)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --no-modify-path --profile minimal --default-toolchain none >&2 ||
            rhv_die "rustup installation from https://sh.rustup.rs failed"
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        command -v cargo >/dev/null 2>&1 || rhv_die "rustup installed but cargo is not on PATH"
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        # A distribution Rust without rustup: trust it has what it needs.
        return 0
    fi
    # rust-toolchain.toml pins the toolchain; these run inside the repo so
    # they act on that toolchain. Install it first if rustup did not yet.
    if ! cargo --version >/dev/null 2>&1; then
        local channel
        channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
        rhv_log "rustup toolchain install ${channel:-stable}"
        rustup toolchain install --profile minimal "${channel:-stable}" >&2 ||
            rhv_die "rustup toolchain install failed"
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-none'; then
        rhv_log "rustup target add x86_64-unknown-none"
        rustup target add x86_64-unknown-none >&2 || rhv_die "rustup target add x86_64-unknown-none failed"
    fi
    local installed
    installed="$(rustup component list --installed 2>/dev/null)"
    local comp
    for comp in clippy rustfmt; do
        if ! grep -q "^$comp" <<<"$installed"; then
            rhv_log "rustup component add $comp"
            rustup component add "$comp" >&2 || rhv_die "rustup component add $comp failed"
        fi
    done
}

rhv_setup() {
    rhv_install_packages
    rhv_install_rust
}

# The cargo target directory (honours CARGO_TARGET_DIR) and the artefacts,
# for the scripts that source this file.
RHV_TARGET_DIR="${CARGO_TARGET_DIR:-$RHV_ROOT/target}"
case "$RHV_TARGET_DIR" in /*) ;; *) RHV_TARGET_DIR="$RHV_ROOT/$RHV_TARGET_DIR" ;; esac
RHV_IMAGE_DIR="$RHV_ROOT/target/image"
RHV_ELF="$RHV_IMAGE_DIR/hypervisor.elf"
RHV_ISO="$RHV_IMAGE_DIR/hypervisor.iso"
RHV_PXE="$RHV_IMAGE_DIR/pxe"
RHV_IMAGE_TOOL="$RHV_TARGET_DIR/debug/rhv-image"
RHV_DEFAULT_CMDLINE="console=ttyS0 loglevel=info"
# Example guests (guest-abi/examples), shipped as boot modules.
RHV_GUEST_DIR="$RHV_IMAGE_DIR/guests"
RHV_GUESTS=(heartbeat spin memdirty hostile fpu smp echo-server blklog)
export RHV_GUEST_DIR
export RHV_IMAGE_DIR

# True when /dev/kvm can be opened for read and write.
rhv_kvm_usable() {
    [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null
}
