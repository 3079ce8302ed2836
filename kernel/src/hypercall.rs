//! Hypercall dispatch (the `syscall` gate, vector 0x100) and exceptions
//! raised by guests. Every argument is validated; guest memory is reached only
//! through `Domain::copy_from`/`copy_to`. Any exception in ring 3 crashes the
//! domain with a one-line reason; the hypervisor carries on.

use core::sync::atomic::{AtomicU32, Ordering};

use guest_abi::{event, nr, Error, MAX_IO_BYTES};
use hypervisor::domain::DomId;

use crate::arch::cpu;
use crate::arch::trap::{exception_name, TrapFrame};
use crate::domains::{self, Stop};
use crate::vcpu;

/// The domain whose console is attached to the serial line (0: none).
static ATTACHED: AtomicU32 = AtomicU32::new(0);

/// Attaches the serial console to a domain (0 detaches).
pub fn attach_console(id: DomId) {
    ATTACHED.store(id, Ordering::Relaxed);
}

/// The attached domain, if any.
pub fn attached() -> Option<DomId> {
    match ATTACHED.load(Ordering::Relaxed) {
        0 => None,
        id => Some(id),
    }
}

/// Handles one hypercall from the running vCPU; the result goes to RAX.
pub fn dispatch(f: &mut TrapFrame) {
    let Some((dom, idx)) = vcpu::current_vcpu() else {
        f.rax = Error::NoSys.to_raw() as u64;
        return;
    };
    let (a1, a2, a3, a4) = (f.rdi, f.rsi, f.rdx, f.r10);
    let r = match f.rax {
        nr::CONSOLE_WRITE => console_write(dom, a1, a2),
        nr::CONSOLE_READ => console_read(dom, a1, a2),
        nr::CLOCK_MONOTONIC => with_dom(dom, |d| Ok(d.now_ns())),
        nr::CLOCK_WALL => Ok((crate::time::boot_unix().max(0) as u64) * 1_000_000_000 + crate::time::now_ns()),
        nr::YIELD => {
            vcpu::schedule();
            Ok(0)
        }
        nr::BLOCK => block(dom, a1),
        nr::EXIT => domains::stop_current(Stop::Exited(a1)),
        nr::VCPU_ID => Ok(u64::from(idx)),
        nr::EVENTS => with_dom(dom, |d| Ok(core::mem::take(&mut d.events))),
        nr::VCPU_UP => vcpu_up(dom, a1, a2, a3, a4),
        nr::CPUID => cpuid(dom, a1, a2, a3, a4),
        nr::NET_INFO => net_info(dom, a1, a2),
        nr::NET_WRITE => net_write(dom, a1, a2),
        nr::NET_READ => net_read(dom, a1, a2),
        nr::BLOCK_INFO => crate::blk::hc_info(dom, a1, a2, a3),
        nr::BLOCK_READ | nr::BLOCK_WRITE => crate::blk::hc_io(dom, f.rax, a1, a2, a3, a4),
        nr::BLOCK_FLUSH => crate::blk::hc_io(dom, f.rax, a1, 0, 0, 0),
        _ => Err(Error::NoSys),
    };
    f.rax = match r {
        Ok(v) => v,
        Err(e) => e.to_raw() as u64,
    };
}

fn with_dom<R>(dom: DomId, f: impl FnOnce(&mut domains::Domain) -> Result<R, Error>) -> Result<R, Error> {
    domains::with_table(|t| match t.get_mut(dom) {
        Some(d) => f(d),
        None => Err(Error::Invalid),
    })
}

fn console_write(dom: DomId, buf: u64, len: u64) -> Result<u64, Error> {
    if len > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    let attached = attached() == Some(dom);
    let out = with_dom(dom, |d| {
        let data = d.copy_from(buf, len)?;
        if attached {
            let mut out = alloc::vec::Vec::with_capacity(data.len() + 16);
            d.out_filter.feed(&data, &mut out);
            Ok(Some(out))
        } else {
            d.console.push(&data);
            Ok(None)
        }
    })?;
    if let Some(out) = out {
        crate::console::write_bytes(&out);
    }
    Ok(len)
}

fn console_read(dom: DomId, buf: u64, len: u64) -> Result<u64, Error> {
    if len > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    with_dom(dom, |d| {
        d.check_writable(buf, len)?;
        let n = (len as usize).min(d.input.len());
        let bytes: alloc::vec::Vec<u8> = d.input.iter().take(n).copied().collect();
        d.copy_to(buf, &bytes)?;
        d.input.drain(..n);
        if d.input.is_empty() {
            d.events &= !event::CONSOLE_INPUT;
        }
        Ok(n as u64)
    })
}

fn block(dom: DomId, deadline: u64) -> Result<u64, Error> {
    let (events, now, host_deadline) = with_dom(dom, |d| Ok((d.events, d.now_ns(), d.host_time(deadline))))?;
    if events != 0 || deadline <= now {
        return Ok(events);
    }
    let host_deadline = if deadline == u64::MAX { None } else { Some(host_deadline) };
    vcpu::block_current(host_deadline);
    with_dom(dom, |d| Ok(d.events))
}

/// CPUID filtered through the domain's CPU policy.
fn cpuid(dom: DomId, leaf: u64, sub: u64, buf: u64, len: u64) -> Result<u64, Error> {
    if len > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    if len < 16 {
        return Err(Error::Invalid);
    }
    let (leaf, sub) =
        (u32::try_from(leaf).map_err(|_| Error::Invalid)?, u32::try_from(sub).map_err(|_| Error::Invalid)?);
    let r = crate::arch::cpu::cpuid(leaf, sub);
    with_dom(dom, |d| {
        let regs = d.policy.filter_leaf(leaf, sub, [r.eax, r.ebx, r.ecx, r.edx]);
        let mut out = [0u8; 16];
        for (i, v) in regs.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        d.copy_to(buf, &out)?;
        Ok(16)
    })
}

fn vcpu_up(dom: DomId, which: u64, rip: u64, rsp: u64, arg: u64) -> Result<u64, Error> {
    let thread = with_dom(dom, |d| {
        let i = usize::try_from(which).map_err(|_| Error::Invalid)?;
        let v = d.vcpus.get_mut(i).ok_or(Error::Invalid)?;
        if v.started {
            return Err(Error::Invalid);
        }
        if !d.can_exec(rip) || rsp > d.mem_bytes || !rsp.is_multiple_of(16) {
            return Err(Error::Invalid);
        }
        let v = d.vcpus.get_mut(i).ok_or(Error::Invalid)?;
        v.started = true;
        Ok(v.thread)
    })?;
    vcpu::set_entry(thread, rip, rsp, arg);
    let paused = with_dom(dom, |d| Ok(d.paused))?;
    if !paused {
        vcpu::set_state(thread, hypervisor::sched::State::Runnable);
    }
    Ok(0)
}

/// Size of the `NetInfo` record: mac[6], pad[2], mtu u32, flags u32 (bit 0:
/// link up).
const NET_INFO_BYTES: u64 = 16;
/// Shortest and longest Ethernet frame a guest may send (no FCS).
const FRAME_MIN: u64 = 14;
const FRAME_MAX: u64 = 1514;

// Network hypercalls: docs/hypercall-abi.md section 13. Checks in order:
// NoDev, lengths (TooBig above MAX_IO_BYTES, then the call's own), buffer.

fn net_info(dom: DomId, buf: u64, len: u64) -> Result<u64, Error> {
    let (mac, link) = crate::network::vif_info(dom).ok_or(Error::NoDev)?;
    if len > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    if len < NET_INFO_BYTES {
        return Err(Error::Invalid);
    }
    let mut rec = [0u8; NET_INFO_BYTES as usize];
    rec[..6].copy_from_slice(&mac.0);
    rec[8..12].copy_from_slice(&1500u32.to_le_bytes());
    rec[12..16].copy_from_slice(&u32::from(link).to_le_bytes());
    with_dom(dom, |d| {
        d.check_writable(buf, len)?;
        d.copy_to(buf, &rec)
    })?;
    Ok(NET_INFO_BYTES)
}

fn net_write(dom: DomId, buf: u64, len: u64) -> Result<u64, Error> {
    if crate::network::vif_info(dom).is_none() {
        return Err(Error::NoDev);
    }
    if len > FRAME_MAX {
        return Err(Error::TooBig);
    }
    if len < FRAME_MIN {
        return Err(Error::Invalid);
    }
    let frame = with_dom(dom, |d| d.copy_from(buf, len))?;
    match crate::network::vif_transmit(dom, &frame) {
        crate::network::VifTx::Taken => Ok(len),
        // The uplink's transmit ring is full: not taken, the guest retries.
        crate::network::VifTx::Full => Err(Error::Again),
        crate::network::VifTx::NoVif => Err(Error::NoDev),
    }
}

fn net_read(dom: DomId, buf: u64, len: u64) -> Result<u64, Error> {
    if crate::network::vif_info(dom).is_none() {
        return Err(Error::NoDev);
    }
    if len > MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    with_dom(dom, |d| d.check_writable(buf, len))?;
    let Some((frame, now_empty)) = crate::network::vif_receive(dom) else {
        with_dom(dom, |d| {
            d.events &= !event::NET_RX;
            Ok(())
        })?;
        return Ok(0);
    };
    // A frame longer than the buffer is cut short (and so lost); the full
    // length tells the guest.
    let n = frame.len().min(len as usize);
    with_dom(dom, |d| {
        if now_empty {
            d.events &= !event::NET_RX;
        }
        d.copy_to(buf, &frame[..n])
    })?;
    Ok(frame.len() as u64)
}

/// An exception in ring 3: the domain is crashed with a one-line reason.
/// CPUID faulting: a guest's `cpuid` (0F A2) raised #GP(0); answer it from
/// the domain's CPU policy and step over it. False if it was something else.
pub fn emulate_cpuid(f: &mut TrapFrame) -> bool {
    if f.vector != 13 || f.error_code != 0 || !crate::arch::cpuid_fault::enabled() {
        return false;
    }
    let Some((dom, _)) = vcpu::current_vcpu() else { return false };
    let (leaf, sub) = (f.rax as u32, f.rcx as u32);
    let done = with_dom(dom, |d| {
        if d.copy_from(f.rip, 2)? != [0x0f, 0xa2] {
            return Err(Error::Invalid);
        }
        let r = crate::arch::cpu::cpuid(leaf, sub);
        Ok(d.policy.filter_leaf(leaf, sub, [r.eax, r.ebx, r.ecx, r.edx]))
    });
    match done {
        Ok(regs) => {
            f.rax = u64::from(regs[0]);
            f.rbx = u64::from(regs[1]);
            f.rcx = u64::from(regs[2]);
            f.rdx = u64::from(regs[3]);
            f.rip += 2;
            true
        }
        Err(_) => false,
    }
}

pub fn guest_exception(f: &TrapFrame) -> ! {
    let (mn, name) = exception_name(f.vector);
    let reason = if f.vector == 14 {
        let cr2 = cpu::read_cr2();
        let op = if f.error_code & 16 != 0 {
            "execute"
        } else if f.error_code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        let why = if f.error_code & 1 != 0 { "protection" } else { "not mapped" };
        alloc::format!("{mn} {name}: {op} of {cr2:#x} ({why}) at RIP={:#x}", f.rip)
    } else if f.error_code != 0 {
        alloc::format!("{mn} {name} (error {:#x}) at RIP={:#x}", f.error_code, f.rip)
    } else {
        alloc::format!("{mn} {name} at RIP={:#x}", f.rip)
    };
    domains::stop_current(Stop::Crashed(reason))
}
