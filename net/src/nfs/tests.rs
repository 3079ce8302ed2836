use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use super::fake::{FakeServer, EXPORT};
use super::*;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8).collect()
}

fn client(mut s: FakeServer) -> Nfs<FakeServer> {
    let m = mount(&mut s, EXPORT).unwrap();
    assert_eq!(m.export, EXPORT);
    Nfs::new(s, m.root).unwrap()
}

fn tree() -> FakeServer {
    let mut s = FakeServer::new();
    s.add("var/xen/rx7.img", Some(pattern(5 * 1024 * 1024 + 123)));
    s.add("var/xen/small.txt", Some(b"hello".to_vec()));
    s.add("var/empty", None);
    s
}

#[test]
fn mount_exports_unmount() {
    let mut s = tree();
    let ex = exports(&mut s).unwrap();
    assert_eq!(ex[0].dir, EXPORT);
    assert_eq!(mount(&mut s, "/nope"), Err(NfsError::Mount(MountStat::NoEnt)));
    assert_eq!(mount(&mut s, "/nope").unwrap_err().to_string(), "MNT: MNT3ERR_NOENT: no such file or directory");
    mount(&mut s, EXPORT).unwrap();
    unmount(&mut s, EXPORT).unwrap();
}

#[test]
fn transfer_sizes_from_fsinfo() {
    let n = client(tree());
    assert_eq!((n.rsize(), n.wsize()), (64 * 1024, 32 * 1024));
    let mut s = tree();
    s.rtpref = 8 * 1024 * 1024;
    s.wtpref = 512;
    let n = client(s);
    assert_eq!((n.rsize(), n.wsize()), (MAX_TRANSFER, MIN_TRANSFER));
    assert_eq!(transfer_size(0, 0), MAX_TRANSFER);
    assert_eq!(transfer_size(65536, 8192), 8192);
}

#[test]
fn lookup_nested_and_errors() {
    let mut n = client(tree());
    let (fh, a) = n.lookup("var/xen/small.txt").unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(a.ftype, FType3::Reg);
    let (fh2, _) = n.lookup("/./var//xen/../xen/small.txt/").unwrap();
    assert_eq!(fh, fh2);
    let (root, ra) = n.lookup("").unwrap();
    assert_eq!(&root, n.root());
    assert_eq!(ra.ftype, FType3::Dir);
    assert_eq!(n.lookup("/").unwrap().0, root);
    assert_eq!(n.lookup("var/..").unwrap().0, root);
    // '..' leaving the root.
    assert_eq!(n.lookup(".."), Err(NfsError::InvalidPath("..".into())));
    assert!(matches!(n.lookup("var/../../etc/passwd"), Err(NfsError::InvalidPath(_))));
    assert_eq!(n.lookup("../x").unwrap_err().to_string(), "LOOKUP ../x: '..' leaves the export root");
    // Missing paths name the path.
    let e = n.lookup("var/xen/missing.img").unwrap_err();
    assert_eq!(e, NfsError::NotFound("/var/xen/missing.img".into()));
    assert_eq!(e.to_string(), "LOOKUP /var/xen/missing.img: no such file or directory");
    assert_eq!(n.lookup("nothere/a/b"), Err(NfsError::NotFound("/nothere".into())));
    // A file used as a directory.
    assert_eq!(n.lookup("var/xen/small.txt/x"), Err(NfsError::NotADirectory("/var/xen/small.txt".into())));
}

#[test]
fn split_parent_and_components() {
    assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
    assert_eq!(split_parent("/c"), ("", "c"));
    assert_eq!(split_parent("c"), ("", "c"));
    assert_eq!(split_parent("a//c/"), ("a", "c"));
    assert_eq!(split_parent(""), ("", ""));
    assert_eq!(path_components("a/./b//c").unwrap(), vec!["a", "b", "c"]);
    assert_eq!(path_components("a/../b").unwrap(), vec!["b"]);
    assert!(path_components("a/../..").is_err());
}

#[test]
fn read_5mib_in_rsize_chunks() {
    let mut n = client(tree());
    let (fh, a) = n.lookup("var/xen/rx7.img").unwrap();
    n.transport().calls.clear();
    let mut got = Vec::new();
    let len = n.read_to(&fh, 0, u64::MAX, &mut |d| got.extend_from_slice(d)).unwrap();
    assert_eq!(len, a.size);
    assert_eq!(got, pattern(5 * 1024 * 1024 + 123));
    let reads = n.transport().calls.iter().filter(|&&p| p == proc_::READ).count();
    // 80 full 64 KiB chunks + the tail; reading to an unknown end, the last
    // window may send up to READ_WINDOW - 1 READs past EOF.
    assert!((81..81 + crate::nfs::READ_WINDOW).contains(&reads), "{reads} READs");
    // With the length known, not one READ is wasted.
    n.transport().calls.clear();
    let mut again = Vec::new();
    assert_eq!(n.read_to(&fh, 0, a.size, &mut |d| again.extend_from_slice(d)).unwrap(), a.size);
    assert_eq!(again, got);
    assert_eq!(n.transport().calls.iter().filter(|&&p| p == proc_::READ).count(), 81);
    // A window in the middle.
    let mut mid = Vec::new();
    assert_eq!(n.read_to(&fh, 1_000_000, 200_000, &mut |d| mid.extend_from_slice(d)).unwrap(), 200_000);
    assert_eq!(mid, pattern(5 * 1024 * 1024 + 123)[1_000_000..1_200_000]);
    // Single reads: clamped to rsize, eof at the end.
    let (d, eof) = n.read(&fh, 0, 10 * 1024 * 1024).unwrap();
    assert_eq!((d.len(), eof), (64 * 1024, false));
    let (d, eof) = n.read(&fh, a.size - 3, 100).unwrap();
    assert_eq!((d.len(), eof), (3, true));
    let (d, eof) = n.read(&fh, a.size + 10, 100).unwrap();
    assert!(d.is_empty() && eof);
}

#[test]
fn write_commit_and_set_size() {
    let mut n = client(tree());
    let (dir, _) = n.lookup("var").unwrap();
    let fh = n.create(&dir, "new.img", 0o600, false).unwrap();
    let data = pattern(100_000);
    let ok = n.write(&fh, 0, &data, StableHow::Unstable).unwrap();
    assert_eq!(ok.count, 100_000);
    assert_eq!(ok.committed, StableHow::Unstable);
    assert_eq!(ok.verf, *b"verf0001");
    let writes = n.transport().calls.iter().filter(|&&p| p == proc_::WRITE).count();
    assert_eq!(writes, 4); // 32 KiB chunks
    assert_eq!(n.commit(&fh).unwrap(), *b"verf0001");
    assert_eq!(n.transport().node_at("var/new.img").unwrap().data, data);
    let ok = n.write(&fh, 99_990, b"0123456789abc", StableHow::FileSync).unwrap();
    assert_eq!((ok.count, ok.committed), (13, StableHow::FileSync));
    assert_eq!(n.getattr(&fh).unwrap().size, 100_003);
    n.set_size(&fh, 10).unwrap();
    assert_eq!(n.getattr(&fh).unwrap().size, 10);
    assert_eq!(n.write(&fh, 0, &[], StableHow::Unstable).unwrap().count, 0);
}

#[test]
fn verifier_change_detected() {
    let mut n = client(tree());
    let (fh, _) = n.lookup("var/xen/small.txt").unwrap();
    n.write(&fh, 0, b"abc", StableHow::Unstable).unwrap();
    n.transport().verf = *b"verf0002";
    let e = n.commit(&fh).unwrap_err();
    assert!(e.is_verifier_changed());
    assert_eq!(e, NfsError::Protocol(VERIFIER_CHANGED.into()));
    // The caller resends and commits: fine now.
    n.write(&fh, 0, b"abc", StableHow::Unstable).unwrap();
    assert_eq!(n.commit(&fh).unwrap(), *b"verf0002");
    // A change between two unstable writes is reported by the WRITE.
    n.write(&fh, 0, b"x", StableHow::Unstable).unwrap();
    n.transport().verf = *b"verf0003";
    assert!(n.write(&fh, 1, b"y", StableHow::Unstable).unwrap_err().is_verifier_changed());
    n.write(&fh, 0, b"xy", StableHow::Unstable).unwrap();
    assert_eq!(n.commit(&fh).unwrap(), *b"verf0003");
    // Commit without outstanding writes just returns the verifier.
    n.transport().verf = *b"verf0004";
    assert_eq!(n.commit(&fh).unwrap(), *b"verf0004");
}

#[test]
fn create_mkdir_remove_rmdir_rename() {
    let mut n = client(tree());
    let (root, _) = n.lookup("").unwrap();
    let d = n.mkdir(&root, "guests", 0o750).unwrap();
    assert_eq!(n.getattr(&d).unwrap().ftype, FType3::Dir);
    assert_eq!(n.getattr(&d).unwrap().mode, 0o750);
    let f = n.create(&d, "a.img", 0o640, true).unwrap();
    assert_eq!(n.getattr(&f).unwrap().mode, 0o640);
    assert_eq!(n.lookup("guests/a.img").unwrap().0, f);
    // Exclusive create of an existing file fails; unchecked opens it.
    let e = n.create(&d, "a.img", 0o640, true).unwrap_err();
    assert_eq!(e.to_string(), "CREATE /guests/a.img: NFS3ERR_EXIST (file exists)");
    assert_eq!(n.create(&d, "a.img", 0o640, false).unwrap(), f);
    assert_eq!(e.status(), Some(NfsStat3::Exist));
    assert_eq!(n.mkdir(&root, "guests", 0o755).unwrap_err().to_string(), "MKDIR /guests: NFS3ERR_EXIST (file exists)");
    // Rename across directories; the handle keeps a path for messages.
    let (var, _) = n.lookup("var").unwrap();
    n.rename(&d, "a.img", &var, "b.img").unwrap();
    assert!(matches!(n.lookup("guests/a.img"), Err(NfsError::NotFound(_))));
    assert_eq!(n.lookup("var/b.img").unwrap().0, f);
    assert_eq!(n.path_of(&f), "/var/b.img");
    // rmdir of a non-empty directory, remove of a directory.
    n.create(&d, "c", 0o600, false).unwrap();
    assert_eq!(n.rmdir(&root, "guests").unwrap_err().status(), Some(NfsStat3::NotEmpty));
    assert_eq!(n.remove(&root, "guests").unwrap_err().status(), Some(NfsStat3::IsDir));
    n.remove(&d, "c").unwrap();
    n.rmdir(&root, "guests").unwrap();
    assert!(n.transport().node_at("guests").is_none());
    n.remove(&var, "b.img").unwrap();
    assert_eq!(
        n.remove(&var, "b.img").unwrap_err().to_string(),
        "REMOVE /var/b.img: NFS3ERR_NOENT (no such file or directory)"
    );
    // Servers that omit the new handle: the client looks it up.
    n.transport().omit_created_fh = true;
    let g = n.mkdir(&root, "g2", 0o755).unwrap();
    let h = n.create(&g, "h", 0o644, false).unwrap();
    assert_eq!(n.lookup("g2/h").unwrap().0, h);
}

#[test]
fn readdir_across_pages() {
    let mut s = tree();
    for i in 0..250 {
        s.add(&format!("many/f{i:03}"), Some(vec![0; i]));
    }
    s.dir_page = 7;
    let mut n = client(s);
    let (dir, _) = n.lookup("many").unwrap();
    n.transport().calls.clear();
    let list = n.readdir(&dir).unwrap();
    assert_eq!(list.len(), 250);
    let pages = n.transport().calls.iter().filter(|&&p| p == proc_::READDIRPLUS).count();
    assert_eq!(pages, 252usize.div_ceil(7));
    for (i, e) in list.iter().enumerate() {
        assert_eq!(e.name, format!("f{i:03}"));
        assert_eq!(e.attr.unwrap().size, i as u64);
        assert_eq!(e.attr.unwrap().fileid, e.fileid);
        assert!(e.fh.is_some());
    }
    let (empty, _) = n.lookup("var/empty").unwrap();
    assert!(n.readdir(&empty).unwrap().is_empty());
    let (f, _) = n.lookup("var/xen/small.txt").unwrap();
    assert_eq!(
        n.readdir(&f).unwrap_err().to_string(),
        "READDIRPLUS /var/xen/small.txt: NFS3ERR_NOTDIR (not a directory)"
    );
}

#[test]
fn fsstat_works() {
    let mut n = client(tree());
    let st = n.fsstat().unwrap();
    assert_eq!((st.tbytes, st.fbytes, st.abytes, st.afiles), (1 << 40, 1 << 39, 1 << 38, 800));
}

#[test]
fn jukebox_retried_with_backoff() {
    let mut n = client(tree());
    n.transport().jukebox = 7;
    let (_, a) = n.lookup("var/xen/small.txt").unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(n.transport().waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    // Past the retry budget the error is reported.
    n.transport().waits.clear();
    n.transport().jukebox = JUKEBOX_RETRIES + 1;
    let e = n.fsstat().unwrap_err();
    assert_eq!(e.status(), Some(NfsStat3::Jukebox));
    assert_eq!(n.transport().waits.len(), JUKEBOX_RETRIES as usize);
    assert_eq!(e.to_string(), "FSSTAT /: NFS3ERR_JUKEBOX (server busy, retry later)");
    // JUKEBOX on a write chunk: the same chunk is resent.
    let (fh, _) = n.lookup("var/xen/small.txt").unwrap();
    n.transport().jukebox = 2;
    n.write(&fh, 0, b"HELLO", StableHow::FileSync).unwrap();
    assert_eq!(n.transport().node_at("var/xen/small.txt").unwrap().data, b"HELLO");
}

#[test]
fn read_only_export() {
    let mut s = tree();
    s.read_only = true;
    let mut n = client(s);
    let (fh, _) = n.lookup("var/xen/rx7.img").unwrap();
    let e = n.write(&fh, 0, b"x", StableHow::Unstable).unwrap_err();
    assert_eq!(e.to_string(), "WRITE /var/xen/rx7.img: NFS3ERR_ROFS (read-only file system)");
    let (var, _) = n.lookup("var").unwrap();
    assert_eq!(
        n.create(&var, "n", 0o644, false).unwrap_err().to_string(),
        "CREATE /var/n: NFS3ERR_ROFS (read-only file system)"
    );
    assert_eq!(n.set_size(&fh, 0).unwrap_err().status(), Some(NfsStat3::RoFs));
    // Reads still work.
    assert_eq!(n.read(&fh, 0, 4).unwrap().0, pattern(4));
}

#[test]
fn transport_errors_propagate() {
    let mut n = client(tree());
    n.transport().drop_calls = 1;
    let e = n.lookup("var").unwrap_err();
    assert_eq!(e, NfsError::Transport(TransportError::Timeout));
    assert_eq!(e.to_string(), "NFS transport: timed out waiting for the server");
    n.lookup("var").unwrap();
    let mut s = tree();
    s.drop_calls = 1;
    assert_eq!(mount(&mut s, EXPORT), Err(NfsError::Transport(TransportError::Timeout)));
    assert_eq!(TransportError::Rpc(crate::rpc::RpcError::ProcUnavail).to_string(), "rpc: procedure unavailable");
    assert_eq!(TransportError::Disconnected("reset".into()).to_string(), "disconnected: reset");
}

#[test]
fn stale_handle_and_malformed_reply() {
    let mut n = client(tree());
    let bogus = NfsFh3::new(b"fakefh\0\0\0\0\0\0\0\x99").unwrap();
    let e = n.getattr(&bogus).unwrap_err();
    assert_eq!(e.status(), Some(NfsStat3::Stale));
    assert!(e.to_string().starts_with("GETATTR fh:66616b6566680000"), "{e}");

    struct Garbage;
    impl RpcTransport for Garbage {
        fn call(&mut self, _: u32, _: u32, _: u32, _: &[u8]) -> Result<Vec<u8>, TransportError> {
            Ok(vec![0, 0, 0, 0, 1])
        }
        fn wait_ms(&mut self, _: u64) {}
    }
    let e = Nfs::new(Garbage, NfsFh3::new(b"r").unwrap()).err().unwrap();
    assert!(matches!(&e, NfsError::Protocol(m) if m.starts_with("FSINFO /: malformed reply")), "{e}");
    assert!(matches!(mount(&mut Garbage, "/x"), Err(NfsError::Protocol(_))));
}
