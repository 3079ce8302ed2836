//! FPU/SSE/AVX state: enabling the units and saving/restoring a vCPU's
//! registers (XSAVE where the CPU has it, FXSAVE otherwise). The hypervisor
//! itself is built soft-float and never touches these registers, so only
//! guest state lives in them.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::cpu;

static XSAVE: AtomicBool = AtomicBool::new(false);
static XCR0: AtomicU64 = AtomicU64::new(0);
static AREA_SIZE: AtomicU64 = AtomicU64::new(512);
/// XCR0 as currently loaded (the FPU owner's domain's).
static CUR_XCR0: AtomicU64 = AtomicU64::new(0);

/// Turns on SSE (and XSAVE with every user state component the CPU has:
/// x87, SSE, AVX, AVX-512 parts) for guests.
pub fn init() {
    // SAFETY: CR0.MP set / EM and TS clear and CR4.OSFXSR/OSXMMEXCPT only
    // enable FPU/SSE instructions; the kernel itself never executes them.
    unsafe {
        let cr0 = (cpu::read_cr0() | (1 << 1)) & !((1 << 2) | (1 << 3));
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        cpu::write_cr4(cpu::read_cr4() | (1 << 9) | (1 << 10));
    }
    let l1 = cpu::cpuid(1, 0);
    if l1.ecx & (1 << 26) != 0 {
        let d = cpu::cpuid(0xD, 0);
        // x87 | SSE | AVX | opmask | ZMM_Hi256 | Hi16_ZMM, as supported.
        let xcr0 = u64::from(d.eax) & 0b1110_0111;
        // SAFETY: CR4.OSXSAVE enables XGETBV/XSETBV/XSAVE; XCR0 gets only
        // components CPUID reports (x87 is mandatory and present).
        unsafe {
            cpu::write_cr4(cpu::read_cr4() | (1 << 18));
            asm!("xsetbv", in("ecx") 0u32, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack, preserves_flags));
        }
        let size = u64::from(cpu::cpuid(0xD, 0).ebx).max(576);
        AREA_SIZE.store(size, Ordering::Relaxed);
        XCR0.store(xcr0, Ordering::Relaxed);
        CUR_XCR0.store(xcr0, Ordering::Relaxed);
        XSAVE.store(true, Ordering::Relaxed);
    }
}

/// "XSAVE" or "FXSAVE".
pub fn mechanism() -> &'static str {
    if XSAVE.load(Ordering::Relaxed) {
        "XSAVE"
    } else {
        "FXSAVE"
    }
}

/// One vCPU's saved FPU/SSE/AVX registers (64-byte aligned area).
pub struct FpuState {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the area is owned memory with no thread affinity.
unsafe impl Send for FpuState {}

impl FpuState {
    /// The architectural initial state (FCW 0x37F, MXCSR 0x1F80, nothing
    /// else live). None if out of memory.
    pub fn new() -> Option<FpuState> {
        let size = AREA_SIZE.load(Ordering::Relaxed) as usize;
        let layout = Layout::from_size_align(size, 64).ok()?;
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: the area is at least 512 bytes: FCW at 0, MXCSR at 24.
        unsafe {
            (ptr as *mut u16).write(0x037F);
            (ptr.add(24) as *mut u32).write(0x1F80);
        }
        Some(FpuState { ptr, layout })
    }

    /// Saves the CPU's current FPU registers here.
    pub fn save(&mut self) {
        if XSAVE.load(Ordering::Relaxed) {
            let m = XCR0.load(Ordering::Relaxed);
            // SAFETY: the area is 64-byte aligned and as large as CPUID 0xD
            // says XSAVE needs for XCR0's components.
            unsafe {
                asm!("xsave64 [{}]", in(reg) self.ptr, in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: 512-byte, 16-byte aligned area.
            unsafe { asm!("fxsave64 [{}]", in(reg) self.ptr, options(nostack, preserves_flags)) };
        }
    }

    /// Loads the FPU registers from here.
    pub fn restore(&self) {
        if XSAVE.load(Ordering::Relaxed) {
            let m = XCR0.load(Ordering::Relaxed);
            // SAFETY: as in `save`; the area holds a valid XSAVE image (zeroed
            // header = initial state, or what `save` wrote).
            unsafe {
                asm!("xrstor64 [{}]", in(reg) self.ptr, in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: as in `save`; MXCSR reserved bits are zero (initial
            // state or a value FXSAVE wrote).
            unsafe { asm!("fxrstor64 [{}]", in(reg) self.ptr, options(nostack, preserves_flags)) };
        }
    }
}

/// Sets XCR0 (the XSAVE components user code may use) to `want` limited
/// to what the host enables; no-op without XSAVE or when unchanged.
pub fn set_xcr0(want: u64) {
    if !XSAVE.load(Ordering::Relaxed) {
        return;
    }
    let v = (want & XCR0.load(Ordering::Relaxed)) | 0b11;
    if CUR_XCR0.load(Ordering::Relaxed) == v {
        return;
    }
    // SAFETY: CR4.OSXSAVE is set (XSAVE true); `v` is a subset of the
    // components init() enabled and always has x87 and SSE, and AVX-512
    // bits come only with AVX (the policy's rule), so XSETBV cannot fault.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags));
    }
    CUR_XCR0.store(v, Ordering::Relaxed);
}

/// Saved-area formats, as the migration stream names them.
pub const FORMAT_FXSAVE: u8 = 0;
pub const FORMAT_XSAVE: u8 = 1;

/// The XCR0 this host runs guests with (0 without XSAVE).
pub fn host_xcr0() -> u64 {
    if XSAVE.load(Ordering::Relaxed) {
        XCR0.load(Ordering::Relaxed)
    } else {
        0
    }
}

impl FpuState {
    fn area(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes owned
        // by self.
        unsafe { core::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn area_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `area`, and `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }

    /// The saved registers for a migration stream: (format, XCR0, bytes).
    /// Call `save` first if the registers are live.
    pub fn export(&self) -> (u8, u64, alloc::vec::Vec<u8>) {
        if XSAVE.load(Ordering::Relaxed) {
            (FORMAT_XSAVE, XCR0.load(Ordering::Relaxed), self.area().to_vec())
        } else {
            (FORMAT_FXSAVE, 0, self.area()[..512].to_vec())
        }
    }

    /// Rebuilds a state exported by another host, converting between
    /// FXSAVE and XSAVE (standard format). Whatever could make a restore
    /// fault is refused or cleared (reserved MXCSR bits, components this host
    /// does not enable, compacted format, reserved header bytes).
    pub fn import(format: u8, xcr0: u64, bytes: &[u8]) -> Result<FpuState, &'static str> {
        if bytes.len() < 512 {
            return Err("FPU state shorter than 512 bytes");
        }
        let mxcsr = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        if mxcsr & 0xFFFF_0000 != 0 {
            return Err("FPU state has reserved MXCSR bits set");
        }
        let mut st = FpuState::new().ok_or("out of memory for FPU state")?;
        let here = host_xcr0();
        let area = st.area_mut();
        area[..512].copy_from_slice(&bytes[..512]);
        if here != 0 {
            let mut bv: u64 = 0b11;
            if format == FORMAT_XSAVE && bytes.len() >= 576 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[512..520]);
                bv = u64::from_le_bytes(b) & xcr0;
                if bytes[520..528].iter().any(|&x| x != 0) {
                    return Err("FPU state is in compacted XSAVE format");
                }
                let n = bytes.len().min(area.len());
                if n > 576 {
                    area[576..n].copy_from_slice(&bytes[576..n]);
                }
            }
            area[512..576].fill(0);
            area[512..520].copy_from_slice(&(bv & here).to_le_bytes());
        }
        Ok(st)
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}
