//! Networking for rhv: smoltcp glue, ONC RPC/XDR and an NFSv3 client.
//! (Filled in by the networking and storage issues.)
#![no_std]
#![deny(unsafe_code)]
