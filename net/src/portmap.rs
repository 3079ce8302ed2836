//! Portmapper version 2 (RFC 1833 §3): `PMAPPROC_GETPORT`.

use alloc::vec::Vec;

use crate::xdr::{XdrError, XdrReader, XdrWriter};

/// The portmapper's program number.
pub const PROGRAM: u32 = 100_000;
/// Portmapper protocol version 2.
pub const VERSION: u32 = 2;
/// The portmapper's well-known port.
pub const PORT: u16 = 111;
/// `PMAPPROC_NULL`.
pub const PROC_NULL: u32 = 0;
/// `PMAPPROC_GETPORT`.
pub const PROC_GETPORT: u32 = 3;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u32 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u32 = 17;

/// Arguments of GETPORT (a `mapping` whose port is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetPortArgs {
    pub prog: u32,
    pub vers: u32,
    pub prot: u32,
}

impl GetPortArgs {
    /// Encodes the arguments.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = XdrWriter::with_capacity(16);
        w.u32(self.prog).u32(self.vers).u32(self.prot).u32(0);
        w.into_bytes()
    }

    /// Decodes the arguments (for tests and loopback servers).
    pub fn decode(b: &[u8]) -> Result<Self, XdrError> {
        let mut r = XdrReader::new(b);
        let prog = r.u32("getport.prog")?;
        let vers = r.u32("getport.vers")?;
        let prot = r.u32("getport.prot")?;
        r.u32("getport.port")?;
        Ok(GetPortArgs { prog, vers, prot })
    }
}

/// Decodes the GETPORT result: `None` when the program is not registered
/// (port 0).
pub fn decode_getport_result(b: &[u8]) -> Result<Option<u16>, XdrError> {
    let mut r = XdrReader::new(b);
    match r.u32("getport.result")? {
        0 => Ok(None),
        p => u16::try_from(p).map(Some).map_err(|_| XdrError::BadDiscriminant { field: "getport.result", value: p }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::testutil::hammer;

    #[test]
    fn getport() {
        let a = GetPortArgs { prog: 100_005, vers: 3, prot: IPPROTO_TCP };
        let b = a.encode();
        assert_eq!(b, [0, 1, 0x86, 0xa5, 0, 0, 0, 3, 0, 0, 0, 6, 0, 0, 0, 0]);
        assert_eq!(GetPortArgs::decode(&b).unwrap(), a);
        assert_eq!(decode_getport_result(&[0, 0, 0x4e, 0x48]).unwrap(), Some(20040));
        assert_eq!(decode_getport_result(&[0, 0, 0, 0]).unwrap(), None);
        assert!(decode_getport_result(&[0, 1, 0, 0]).is_err());
        hammer(&[0, 0, 8, 1], 500, 3, decode_getport_result);
        hammer(&b, 500, 4, GetPortArgs::decode);
    }
}
