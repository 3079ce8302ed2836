//! The relocation port's security layer, without I/O: who may connect, the
//! pre-shared-key handshake that authenticates both hosts, and the framed
//! channel that carries the migration stream afterwards.
//!
//! The protocol is described in `docs/relocation-protocol.md`. In short:
//!
//! * [`AllowList`] is `relocation-hosts-allow`: space-separated regular
//!   expressions matched like Python's `re.match` (anchored at the start
//!   only) against the peer's dotted IPv4 address, as xend did. The server
//!   checks it on accept, before reading anything, and sends a
//!   [`refuse_frame`] to a peer it does not allow.
//! * [`Psk`] is the host key: SHA-256 of the secret from `relocation-key` or
//!   `relocation-key-file`.
//! * [`ServerHandshake`] and [`ClientHandshake`] run HELLO → AUTH → WELCOME
//!   (or REFUSE). Each side proves it knows the key with an HMAC over both
//!   sides' fresh nonces, so nothing recorded from an earlier session is
//!   accepted again.
//! * [`Channel`] seals and opens length-prefixed frames: ChaCha20-Poly1305
//!   with a per-direction key and a per-direction frame counter as the
//!   nonce, or plain frames when both sides agreed to plain mode.
//!
//! The caller does the I/O: it feeds whatever bytes arrive into `push` and
//! sends whatever bytes come back. Randomness (the 32-byte nonces) is the
//! caller's too. Nothing here panics on any input, and no buffer is sized
//! from a peer's length field before that field is checked against a limit.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The TCP port a destination host listens on for relocations.
pub const RELOCATION_PORT: u16 = 8002;
/// The protocol version this module speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The longest handshake frame payload accepted (type byte included).
pub const MAX_HANDSHAKE_FRAME: usize = 512;
/// The longest reason a REFUSE frame carries, in bytes of UTF-8.
pub const MAX_REFUSE_REASON: usize = 200;
/// The longest plaintext [`Channel::seal`] takes, in either mode: one whole
/// migration stream record (8-byte header + 2 MiB + 8 KiB body, the stream's
/// `MAX_RECORD`).
pub const MAX_PLAINTEXT: usize = 8 + 2 * 1024 * 1024 + 8192;
/// The Poly1305 tag length that ends every AEAD frame.
pub const TAG_LEN: usize = 16;
/// The longest channel frame payload accepted (ciphertext and tag in AEAD
/// mode); a longer length field is refused before anything is buffered for it.
pub const MAX_FRAME: usize = MAX_PLAINTEXT + TAG_LEN;
/// The most received bytes a [`Channel`] holds unopened; drain [`Channel::next`]
/// between pushes of at most one frame's worth and this is never reached.
pub const RECV_BUFFER_LIMIT: usize = 2 * (4 + MAX_FRAME);
/// The most patterns `relocation-hosts-allow` may hold.
pub const MAX_ALLOW_PATTERNS: usize = 32;
/// The longest `relocation-hosts-allow` value, in bytes.
pub const MAX_ALLOW_LEN: usize = 2048;
/// The shortest secret [`Psk::from_secret`] accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

const MSG_HELLO: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_WELCOME: u8 = 3;
const MSG_REFUSE: u8 = 4;

const HELLO_LEN: usize = 1 + 2 + 32 + 1;
const AUTH_LEN: usize = 1 + 2 + 32 + 1 + 32;
const WELCOME_LEN: usize = 1 + 32;

const LABEL_CLIENT: &[u8] = b"rhv-relocation v1 client";
const LABEL_SERVER: &[u8] = b"rhv-relocation v1 server";
const LABEL_C2S: &[u8] = b"rhv-relocation v1 c2s";
const LABEL_S2C: &[u8] = b"rhv-relocation v1 s2c";

/// Per-pattern bound on the compiled regex (Thompson NFA), in bytes.
const ALLOW_NFA_LIMIT: usize = 64 * 1024;
/// Per-pattern bound on nesting depth.
const ALLOW_NEST_LIMIT: u32 = 32;

// ---------------------------------------------------------------------------
// Allow-list

/// `relocation-hosts-allow`: which peers may connect to the relocation port.
///
/// Built from space-separated regular expressions; a peer is allowed if any
/// of them matches its dotted IPv4 address at the start (Python's `re.match`,
/// as xend used it: `10\.77\.0\.` allows `10.77.0.5`, and a `$` is needed to
/// pin the end). An empty list allows every host. The regex dialect is Rust's
/// `regex` syntax (ASCII mode): for addresses it is the same as Python's;
/// look-around and back-references are not supported.
#[derive(Clone)]
pub struct AllowList {
    rules: Vec<(String, Regex)>,
}

impl AllowList {
    /// An allow-list that allows every host.
    pub fn any() -> AllowList {
        AllowList { rules: Vec::new() }
    }

    /// Parses a `relocation-hosts-allow` value: regular expressions separated
    /// by spaces. An empty value, or `''` (as xend configs write it), allows
    /// every host; one pair of quotes around the whole value is removed.
    pub fn parse(s: &str) -> Result<AllowList, String> {
        if s.len() > MAX_ALLOW_LEN {
            return Err(format!("relocation-hosts-allow is {} bytes long; the limit is {MAX_ALLOW_LEN}", s.len()));
        }
        let mut t = s.trim();
        for q in ['\'', '"'] {
            if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
                t = &t[1..t.len() - 1];
                break;
            }
        }
        let mut rules = Vec::new();
        for pattern in t.split_ascii_whitespace() {
            if rules.len() == MAX_ALLOW_PATTERNS {
                return Err(format!("relocation-hosts-allow has more than {MAX_ALLOW_PATTERNS} patterns"));
            }
            let re = Regex::builder()
                .syntax(syntax::Config::new().unicode(false).utf8(false).nest_limit(ALLOW_NEST_LIMIT))
                .configure(meta::Config::new().nfa_size_limit(Some(ALLOW_NFA_LIMIT)))
                .build(pattern)
                .map_err(|e| format!("bad relocation-hosts-allow pattern '{pattern}': {}", build_error(&e)))?;
            rules.push((pattern.to_string(), re));
        }
        Ok(AllowList { rules })
    }

    /// Whether `peer` (a dotted IPv4 address such as `10.77.0.5`) may connect.
    pub fn allows(&self, peer: &str) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let input = Input::new(peer).anchored(Anchored::Yes);
        self.rules.iter().any(|(_, re)| {
            let mut cache = re.create_cache();
            re.is_match_with(&mut cache, &input)
        })
    }

    /// Whether every host is allowed (no patterns).
    pub fn is_any(&self) -> bool {
        self.rules.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(p, _)| p.as_str())
    }
}

impl Default for AllowList {
    fn default() -> AllowList {
        AllowList::any()
    }
}

impl fmt::Debug for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.patterns()).finish()
    }
}

/// What is wrong with a pattern, on one line.
fn build_error(e: &meta::BuildError) -> String {
    if let Some(syntax) = e.syntax_error() {
        // The parser's message draws the pattern with a caret under the
        // fault, then says `error: …`; keep that last part.
        let text = syntax.to_string();
        match text.lines().find_map(|l| l.trim().strip_prefix("error: ")) {
            Some(what) => what.to_string(),
            None => one_line(&text),
        }
    } else if let Some(limit) = e.size_limit() {
        format!("too complex (its automaton would be over {limit} bytes)")
    } else {
        one_line(&e.to_string())
    }
}

/// Squeezes a possibly multi-line message (the regex parser draws a caret
/// under the bad spot) onto one line.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' ')) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}

// ---------------------------------------------------------------------------
// Key

/// The relocation pre-shared key: SHA-256 of the configured secret. Its
/// `Debug` does not show the key.
#[derive(Clone)]
pub struct Psk([u8; 32]);

impl Psk {
    /// Derives the key from a secret (the `relocation-key` value or the
    /// contents of `relocation-key-file`). One trailing newline (`\n` or
    /// `\r\n`) is removed first; the rest must be at least
    /// [`MIN_SECRET_LEN`] bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Psk, String> {
        let s = secret.strip_suffix(b"\n").unwrap_or(secret);
        let s = if s.len() < secret.len() { s.strip_suffix(b"\r").unwrap_or(s) } else { s };
        if s.len() < MIN_SECRET_LEN {
            return Err(format!("relocation key too short: {} bytes, need at least {MIN_SECRET_LEN}", s.len()));
        }
        Ok(Psk(Sha256::digest(s).into()))
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<secret>)")
    }
}

/// An HMAC-SHA256 instance keyed with `key`, built without a fallible call:
/// HMAC pads keys shorter than the 64-byte block with zeros, so the padded
/// block is the same key.
fn hmac_with(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&block.into())
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = hmac_with(key);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Checks `tag` against HMAC(key, parts) in constant time.
fn hmac_verify(key: &[u8; 32], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = hmac_with(key);
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

// ---------------------------------------------------------------------------
// Handshake

/// How the channel protects frames once the handshake is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// ChaCha20-Poly1305 on every frame (the default).
    Aead,
    /// Frames in the clear, for benchmarks; both hosts were still
    /// authenticated. The server must allow it (`relocation-crypto=off`).
    Plain,
}

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::Aead => 0,
            Mode::Plain => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Mode> {
        match b {
            0 => Some(Mode::Aead),
            1 => Some(Mode::Plain),
            _ => None,
        }
    }
}

/// Why a handshake failed. `Display` is one line;
/// [`refuse_frame`](HandshakeError::refuse_frame) gives the REFUSE frame to
/// send the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The client's HMAC proof did not verify: a different key, or an AUTH
    /// replayed from another session.
    BadClientProof,
    /// The server's HMAC proof did not verify: the server does not know the key.
    BadServerProof,
    /// The client asked for plain mode and this host does not allow it.
    PlainNotAllowed,
    /// The client speaks another protocol version.
    ClientVersion(u16),
    /// The server speaks another protocol version.
    ServerVersion(u16),
    /// A handshake frame's length field is over [`MAX_HANDSHAKE_FRAME`].
    FrameTooLong(u32),
    /// The peer sent something that is not a valid handshake message here.
    Malformed(&'static str),
    /// The peer sent REFUSE with this reason (control characters replaced).
    Refused(String),
    /// `push` after the handshake finished or failed.
    Finished,
}

impl HandshakeError {
    /// The REFUSE frame telling the peer why, or `None` when the peer should
    /// not be answered (it refused us, or the handshake is already over).
    pub fn refuse_frame(&self) -> Option<Vec<u8>> {
        match self {
            HandshakeError::Refused(_) | HandshakeError::Finished => None,
            e => Some(refuse_frame(&e.to_string())),
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadClientProof => f.write_str("bad key: client's proof does not match"),
            HandshakeError::BadServerProof => f.write_str("bad key: server's proof does not match"),
            HandshakeError::PlainNotAllowed => f.write_str("plain mode not allowed by this host"),
            HandshakeError::ClientVersion(v) => {
                write!(f, "unsupported protocol version: client speaks v{v}, this host speaks v{PROTOCOL_VERSION}")
            }
            HandshakeError::ServerVersion(v) => {
                write!(f, "unsupported protocol version: server speaks v{v}, this host speaks v{PROTOCOL_VERSION}")
            }
            HandshakeError::FrameTooLong(n) => {
                write!(f, "handshake frame of {n} bytes is over the {MAX_HANDSHAKE_FRAME}-byte limit")
            }
            HandshakeError::Malformed(what) => write!(f, "malformed handshake: {what}"),
            HandshakeError::Refused(reason) => write!(f, "refused: {reason}"),
            HandshakeError::Finished => f.write_str("handshake is over: it already finished or failed"),
        }
    }
}

impl core::error::Error for HandshakeError {}

/// A REFUSE frame carrying `reason` (cut to [`MAX_REFUSE_REASON`] bytes at a
/// character boundary, control characters replaced). The server sends one
/// to a peer that the allow-list refuses, then closes the connection.
pub fn refuse_frame(reason: &str) -> Vec<u8> {
    let clean = sanitize(reason);
    let mut n = clean.len().min(MAX_REFUSE_REASON);
    while !clean.is_char_boundary(n) {
        n -= 1;
    }
    frame(MSG_REFUSE, &[&clean.as_bytes()[..n]])
}

/// Replaces control characters so a peer's text cannot drive a terminal.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A handshake frame: u32 LE length, type byte, the parts.
fn frame(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// The reason in a REFUSE payload (type byte first).
fn parse_refuse(payload: &[u8]) -> HandshakeError {
    let reason = &payload[1..];
    if reason.len() > MAX_REFUSE_REASON {
        return HandshakeError::Malformed("REFUSE reason longer than 200 bytes");
    }
    HandshakeError::Refused(sanitize(&String::from_utf8_lossy(reason)))
}

/// The version field of a HELLO or AUTH payload, if it is long enough to have one.
fn version_of(payload: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*payload.get(1)?, *payload.get(2)?]))
}

fn arr32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

/// Collects one handshake frame at a time, never holding more than
/// `4 + MAX_HANDSHAKE_FRAME` bytes.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Takes bytes from the front of `input` until a frame is complete, then
    /// returns its payload. `Ok(None)` means `input` was used up first.
    fn take(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, HandshakeError> {
        if self.buf.len() < 4 {
            let n = (4 - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            *input = &input[n..];
            if self.buf.len() < 4 {
                return Ok(None);
            }
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len as usize > MAX_HANDSHAKE_FRAME {
            return Err(HandshakeError::FrameTooLong(len));
        }
        if len == 0 {
            return Err(HandshakeError::Malformed("empty frame"));
        }
        let want = 4 + len as usize;
        let n = (want - self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        *input = &input[n..];
        if self.buf.len() < want {
            return Ok(None);
        }
        let payload = self.buf[4..].to_vec();
        self.buf.clear();
        Ok(Some(payload))
    }
}

/// The server (destination host) side of the handshake.
///
/// Send the HELLO from [`new`](Self::new), then [`push`](Self::push) every
/// byte received until it returns the channel and the WELCOME to send, or an
/// error whose [`refuse_frame`](HandshakeError::refuse_frame) to send before
/// closing.
pub struct ServerHandshake {
    psk: Psk,
    ns: [u8; 32],
    allow_plain: bool,
    reader: FrameReader,
    over: bool,
}

impl ServerHandshake {
    /// Starts a handshake with a fresh random `server_nonce`; returns the
    /// HELLO frame to send. `allow_plain` is `relocation-crypto=off`.
    pub fn new(psk: Psk, server_nonce: [u8; 32], allow_plain: bool) -> (ServerHandshake, Vec<u8>) {
        let hello = frame(MSG_HELLO, &[&PROTOCOL_VERSION.to_le_bytes(), &server_nonce, &[u8::from(allow_plain)]]);
        let hs = ServerHandshake { psk, ns: server_nonce, allow_plain, reader: FrameReader::default(), over: false };
        (hs, hello)
    }

    /// Feeds received bytes. `Ok(None)`: need more. `Ok(Some((channel,
    /// welcome)))`: send `welcome`, then use `channel` (bytes that followed
    /// the AUTH are already in it). After an error or success, further
    /// calls return [`HandshakeError::Finished`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<(Channel, Vec<u8>)>, HandshakeError> {
        if self.over {
            return Err(HandshakeError::Finished);
        }
        let mut input = bytes;
        let r = match self.reader.take(&mut input) {
            Ok(None) => return Ok(None),
            Ok(Some(payload)) => self.on_auth(&payload).map(|(mut ch, welcome)| {
                ch.push(input);
                Some((ch, welcome))
            }),
            Err(e) => Err(e),
        };
        self.over = true;
        r
    }

    fn on_auth(&self, p: &[u8]) -> Result<(Channel, Vec<u8>), HandshakeError> {
        match p[0] {
            MSG_AUTH => {}
            MSG_REFUSE => return Err(parse_refuse(p)),
            _ => return Err(HandshakeError::Malformed("expected AUTH from the client")),
        }
        let version = version_of(p).ok_or(HandshakeError::Malformed("AUTH too short"))?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::ClientVersion(version));
        }
        if p.len() != AUTH_LEN {
            return Err(HandshakeError::Malformed("AUTH has the wrong length"));
        }
        let nc = arr32(&p[3..35]);
        let mode_byte = p[35];
        let key = &self.psk.0;
        if !hmac_verify(key, &[LABEL_CLIENT, &self.ns, &nc, &[mode_byte]], &p[36..68]) {
            return Err(HandshakeError::BadClientProof);
        }
        let mode = Mode::from_byte(mode_byte).ok_or(HandshakeError::Malformed("unknown mode in AUTH"))?;
        if mode == Mode::Plain && !self.allow_plain {
            return Err(HandshakeError::PlainNotAllowed);
        }
        let mac = hmac(key, &[LABEL_SERVER, &nc, &self.ns, &[mode_byte]]);
        let welcome = frame(MSG_WELCOME, &[&mac]);
        let (c2s, s2c) = directional_keys(key, &self.ns, &nc);
        Ok((Channel::new(mode, &s2c, &c2s), welcome))
    }
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake").field("allow_plain", &self.allow_plain).field("over", &self.over).finish()
    }
}

/// What the client handshake wants next.
#[derive(Debug)]
pub enum ClientStep {
    /// Nothing to do until more bytes arrive.
    NeedMore,
    /// Send these bytes (the AUTH), then keep pushing what arrives.
    Send(Vec<u8>),
    /// Authenticated: use this channel (bytes that followed the WELCOME are
    /// already in it).
    Done(Channel),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    AwaitHello,
    AwaitWelcome,
    Over,
}

/// The client (source host) side of the handshake.
///
/// After connecting, [`push`](Self::push) every byte received: the first
/// [`ClientStep::Send`] is the AUTH to send, then [`ClientStep::Done`] gives
/// the channel. On an error, send its
/// [`refuse_frame`](HandshakeError::refuse_frame) if it has one and close;
/// [`HandshakeError::Refused`] carries the server's reason.
pub struct ClientHandshake {
    psk: Psk,
    nc: [u8; 32],
    ns: [u8; 32],
    mode: Mode,
    state: ClientState,
    reader: FrameReader,
    /// Bytes that arrived together with the HELLO (a server should send none).
    stash: Vec<u8>,
}

impl ClientHandshake {
    /// Starts a handshake with a fresh random `client_nonce`, asking for `mode`.
    pub fn new(psk: Psk, client_nonce: [u8; 32], mode: Mode) -> ClientHandshake {
        ClientHandshake {
            psk,
            nc: client_nonce,
            ns: [0; 32],
            mode,
            state: ClientState::AwaitHello,
            reader: FrameReader::default(),
            stash: Vec::new(),
        }
    }

    /// Feeds received bytes; see [`ClientStep`]. After an error or
    /// [`ClientStep::Done`], further calls return [`HandshakeError::Finished`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<ClientStep, HandshakeError> {
        if self.state == ClientState::Over {
            return Err(HandshakeError::Finished);
        }
        let stash = core::mem::take(&mut self.stash);
        let r = self.drive([&stash[..], bytes]);
        if !matches!(r, Ok(ClientStep::NeedMore | ClientStep::Send(_))) {
            self.state = ClientState::Over;
        }
        r
    }

    fn drive(&mut self, mut parts: [&[u8]; 2]) -> Result<ClientStep, HandshakeError> {
        for i in 0..2 {
            while !parts[i].is_empty() {
                let Some(payload) = self.reader.take(&mut parts[i])? else { continue };
                let rest = if i == 0 { parts } else { [parts[1], &[]] };
                if self.state == ClientState::AwaitHello {
                    let auth = self.on_hello(&payload)?;
                    self.state = ClientState::AwaitWelcome;
                    if rest[0].len() + rest[1].len() > 4 + MAX_HANDSHAKE_FRAME {
                        return Err(HandshakeError::Malformed("server sent too much before our AUTH"));
                    }
                    self.stash = [rest[0], rest[1]].concat();
                    return Ok(ClientStep::Send(auth));
                }
                let mut ch = self.on_welcome(&payload)?;
                ch.push(rest[0]);
                ch.push(rest[1]);
                return Ok(ClientStep::Done(ch));
            }
        }
        Ok(ClientStep::NeedMore)
    }

    fn on_hello(&mut self, p: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        match p[0] {
            MSG_HELLO => {}
            MSG_REFUSE => return Err(parse_refuse(p)),
            _ => return Err(HandshakeError::Malformed("expected HELLO from the server")),
        }
        let version = version_of(p).ok_or(HandshakeError::Malformed("HELLO too short"))?;
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::ServerVersion(version));
        }
        if p.len() != HELLO_LEN {
            return Err(HandshakeError::Malformed("HELLO has the wrong length"));
        }
        if p[35] > 1 {
            return Err(HandshakeError::Malformed("HELLO's allow_plain is not 0 or 1"));
        }
        self.ns = arr32(&p[3..35]);
        let mode = [self.mode.byte()];
        let mac = hmac(&self.psk.0, &[LABEL_CLIENT, &self.ns, &self.nc, &mode]);
        Ok(frame(MSG_AUTH, &[&PROTOCOL_VERSION.to_le_bytes(), &self.nc, &mode, &mac]))
    }

    fn on_welcome(&self, p: &[u8]) -> Result<Channel, HandshakeError> {
        match p[0] {
            MSG_WELCOME => {}
            MSG_REFUSE => return Err(parse_refuse(p)),
            _ => return Err(HandshakeError::Malformed("expected WELCOME from the server")),
        }
        if p.len() != WELCOME_LEN {
            return Err(HandshakeError::Malformed("WELCOME has the wrong length"));
        }
        let key = &self.psk.0;
        if !hmac_verify(key, &[LABEL_SERVER, &self.nc, &self.ns, &[self.mode.byte()]], &p[1..33]) {
            return Err(HandshakeError::BadServerProof);
        }
        let (c2s, s2c) = directional_keys(key, &self.ns, &self.nc);
        Ok(Channel::new(self.mode, &c2s, &s2c))
    }
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake").field("mode", &self.mode).field("state", &self.state).finish()
    }
}

/// (k_c2s, k_s2c), both bound to both nonces.
fn directional_keys(key: &[u8; 32], ns: &[u8; 32], nc: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (hmac(key, &[LABEL_C2S, ns, nc]), hmac(key, &[LABEL_S2C, ns, nc]))
}

// ---------------------------------------------------------------------------
// Channel

/// Why the channel failed. After any of these except
/// [`PlaintextTooLong`](ChannelError::PlaintextTooLong) the channel is dead:
/// every later call returns [`Dead`](ChannelError::Dead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// A frame's length field is over [`MAX_FRAME`].
    FrameTooLong(u32),
    /// An AEAD frame too short to hold its tag.
    FrameTooShort(u32),
    /// Frame number `n` (counting from 0) did not authenticate.
    BadFrame(u64),
    /// More than [`RECV_BUFFER_LIMIT`] bytes were pushed without draining `next`.
    Overflow(usize),
    /// [`Channel::seal`] was given more than [`MAX_PLAINTEXT`] bytes (nothing was sent).
    PlaintextTooLong(usize),
    /// 2^64 frames went one way; the nonce would repeat.
    Exhausted,
    /// The channel already failed.
    Dead,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::FrameTooLong(n) => write!(f, "frame of {n} bytes is over the {MAX_FRAME}-byte limit"),
            ChannelError::FrameTooShort(n) => write!(f, "frame of {n} bytes is too short for its {TAG_LEN}-byte tag"),
            ChannelError::BadFrame(n) => {
                write!(f, "frame {n} failed authentication: tampered, replayed, reordered or cut")
            }
            ChannelError::Overflow(n) => {
                write!(f, "receive buffer overflow: {n} bytes unopened, limit {RECV_BUFFER_LIMIT}")
            }
            ChannelError::PlaintextTooLong(n) => {
                write!(f, "message of {n} bytes is over the {MAX_PLAINTEXT}-byte frame limit")
            }
            ChannelError::Exhausted => f.write_str("frame counter exhausted: the nonce would repeat"),
            ChannelError::Dead => f.write_str("channel unusable after an earlier error"),
        }
    }
}

impl core::error::Error for ChannelError {}

/// The protection of one direction.
enum Cipher {
    Plain,
    Aead(ChaCha20Poly1305),
}

/// An authenticated relocation channel: frames of u32 LE length + payload,
/// in order. In AEAD mode the payload is ChaCha20-Poly1305 ciphertext and
/// tag, with the nonce `[0; 4] || counter (u64 LE)` counting frames from 0
/// in each direction and the length bytes as associated data; so a frame
/// tampered with, replayed, reordered, dropped or cut fails.
pub struct Channel {
    mode: Mode,
    tx: Cipher,
    rx: Cipher,
    tx_seq: u64,
    rx_seq: u64,
    buf: Vec<u8>,
    start: usize,
    /// An error found by `push`, reported by the next `next`.
    pending: Option<ChannelError>,
    dead: bool,
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    n.into()
}

impl Channel {
    fn new(mode: Mode, tx_key: &[u8; 32], rx_key: &[u8; 32]) -> Channel {
        let (tx, rx) = match mode {
            Mode::Aead => {
                (Cipher::Aead(ChaCha20Poly1305::new(tx_key.into())), Cipher::Aead(ChaCha20Poly1305::new(rx_key.into())))
            }
            Mode::Plain => (Cipher::Plain, Cipher::Plain),
        };
        Channel { mode, tx, rx, tx_seq: 0, rx_seq: 0, buf: Vec::new(), start: 0, pending: None, dead: false }
    }

    /// Whether frames are encrypted and authenticated (AEAD mode).
    pub fn is_encrypted(&self) -> bool {
        self.mode == Mode::Aead
    }

    /// The mode both sides agreed on.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Seals `plaintext` (at most [`MAX_PLAINTEXT`] bytes) into one whole
    /// frame to send. The plaintext is copied once, into the returned
    /// buffer, and encrypted there.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if self.dead {
            return Err(ChannelError::Dead);
        }
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(ChannelError::PlaintextTooLong(plaintext.len()));
        }
        let Some(next_seq) = self.tx_seq.checked_add(1) else {
            self.dead = true;
            return Err(ChannelError::Exhausted);
        };
        let tag_len = if self.is_encrypted() { TAG_LEN } else { 0 };
        let len = plaintext.len() + tag_len;
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(plaintext);
        if let Cipher::Aead(c) = &self.tx {
            let (aad, body) = out.split_at_mut(4);
            // Only fails for a buffer over 256 GiB, which MAX_PLAINTEXT rules out.
            let tag = c
                .encrypt_in_place_detached(&nonce(self.tx_seq), aad, body)
                .map_err(|_| ChannelError::PlaintextTooLong(plaintext.len()))?;
            out.extend_from_slice(&tag);
        }
        self.tx_seq = next_seq;
        Ok(out)
    }

    /// Adds received bytes. Open them with [`next`](Self::next); keep at most
    /// about one frame's worth unopened (see [`RECV_BUFFER_LIMIT`]).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.dead || self.pending.is_some() || bytes.is_empty() {
            return;
        }
        let unopened = self.buf.len() - self.start;
        if self.start > 0 && self.start >= unopened {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if unopened + bytes.len() > RECV_BUFFER_LIMIT {
            self.pending = Some(ChannelError::Overflow(unopened + bytes.len()));
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Opens the next whole frame received: `Ok(Some(plaintext))`, or
    /// `Ok(None)` until more bytes arrive. Any error kills the channel.
    // Named as the glue expects; not an `Iterator`, since it can fail.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        if self.dead {
            return Err(ChannelError::Dead);
        }
        let r = self.open();
        if r.is_err() {
            self.dead = true;
            self.buf = Vec::new();
            self.start = 0;
        }
        r
    }

    fn open(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            // An overflow is reported once what was accepted is opened.
            return match self.pending.take() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let aad = [avail[0], avail[1], avail[2], avail[3]];
        let len32 = u32::from_le_bytes(aad);
        let len = len32 as usize;
        if len > MAX_FRAME {
            return Err(ChannelError::FrameTooLong(len32));
        }
        if self.is_encrypted() && len < TAG_LEN {
            return Err(ChannelError::FrameTooShort(len32));
        }
        if avail.len() < 4 + len {
            return match self.pending.take() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let seq = self.rx_seq;
        let next_seq = seq.checked_add(1).ok_or(ChannelError::Exhausted)?;
        let mut out = avail[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if let Cipher::Aead(c) = &self.rx {
            let body_len = len - TAG_LEN;
            let tag = Tag::clone_from_slice(&out[body_len..]);
            out.truncate(body_len);
            c.decrypt_in_place_detached(&nonce(seq), &aad, &mut out, &tag).map_err(|_| ChannelError::BadFrame(seq))?;
        }
        self.rx_seq = next_seq;
        Ok(Some(out))
    }

    /// Whether no partial frame is waiting: at the end of the stream, a
    /// `false` here means the peer's last frame was cut off.
    pub fn at_frame_boundary(&self) -> bool {
        self.buf.len() == self.start
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("mode", &self.mode)
            .field("sent", &self.tx_seq)
            .field("received", &self.rx_seq)
            .field("buffered", &(self.buf.len() - self.start))
            .field("dead", &self.dead)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn psk(s: &str) -> Psk {
        Psk::from_secret(s.as_bytes()).unwrap()
    }

    fn nonce32(rng: &mut Rng) -> [u8; 32] {
        let mut n = [0u8; 32];
        for c in n.chunks_mut(8) {
            c.copy_from_slice(&rng.next().to_le_bytes());
        }
        n
    }

    /// Feeds `bytes` to `f` in pieces of `chunk` bytes (0: all at once),
    /// returning the first result that is not "need more".
    fn feed<T>(bytes: &[u8], chunk: usize, mut f: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        if chunk == 0 {
            return f(bytes);
        }
        for piece in bytes.chunks(chunk) {
            if let Some(t) = f(piece) {
                return Some(t);
            }
        }
        None
    }

    struct Outcome {
        server: Result<Channel, HandshakeError>,
        client: Result<Channel, HandshakeError>,
    }

    /// Runs both handshakes against each other, delivering `chunk` bytes at a time.
    fn handshake(server_key: &Psk, client_key: &Psk, mode: Mode, allow_plain: bool, chunk: usize) -> Outcome {
        let mut rng = Rng(0x5eed_1234);
        let (mut server, hello) = ServerHandshake::new(server_key.clone(), nonce32(&mut rng), allow_plain);
        let mut client = ClientHandshake::new(client_key.clone(), nonce32(&mut rng), mode);
        let auth = match feed(&hello, chunk, |b| match client.push(b) {
            Ok(ClientStep::NeedMore) => None,
            other => Some(other),
        }) {
            Some(Ok(ClientStep::Send(auth))) => auth,
            other => panic!("client after HELLO: {other:?}"),
        };
        let answer = feed(&auth, chunk, |b| server.push(b).transpose()).expect("server wants more than an AUTH");
        let (server, reply) = match answer {
            Ok((ch, welcome)) => (Ok(ch), welcome),
            Err(e) => {
                let frame = e.refuse_frame().expect("a refusal to send");
                (Err(e), frame)
            }
        };
        let client = match feed(&reply, chunk, |b| match client.push(b) {
            Ok(ClientStep::NeedMore) => None,
            other => Some(other),
        }) {
            Some(Ok(ClientStep::Done(ch))) => Ok(ch),
            Some(Err(e)) => Err(e),
            other => panic!("client after reply: {other:?}"),
        };
        Outcome { server, client }
    }

    fn pair(mode: Mode) -> (Channel, Channel) {
        let k = psk("a shared secret of some length");
        let o = handshake(&k, &k, mode, true, 0);
        (o.client.unwrap(), o.server.unwrap())
    }

    fn open_all(ch: &mut Channel, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
        ch.push(bytes);
        let mut out = Vec::new();
        while let Some(m) = ch.next()? {
            out.push(m);
        }
        Ok(out)
    }

    // --- allow-list -------------------------------------------------------

    #[test]
    fn allow_list_several_patterns() {
        let a = AllowList::parse(r"^10\.77\.0\.  192\.168\.1\.5$ ^127\.").unwrap();
        assert_eq!(a.patterns().collect::<Vec<_>>(), [r"^10\.77\.0\.", r"192\.168\.1\.5$", r"^127\."]);
        assert!(!a.is_any());
        for ok in ["10.77.0.5", "10.77.0.254", "192.168.1.5", "127.0.0.1"] {
            assert!(a.allows(ok), "{ok}");
        }
        for no in ["10.77.1.5", "192.168.1.50", "110.77.0.5", "1.10.77.0.5", "", "128.0.0.1"] {
            assert!(!a.allows(no), "{no}");
        }
    }

    #[test]
    fn allow_list_anchored_at_start_only() {
        // Python's re.match: no ^ needed, and no $ implied.
        let a = AllowList::parse(r"10\.77\.0\.").unwrap();
        assert!(a.allows("10.77.0.5"));
        assert!(!a.allows("110.77.0.5") && !a.allows("1.10.77.0.5"));
        let b = AllowList::parse(r"10\.0\.0\.1").unwrap();
        assert!(b.allows("10.0.0.1") && b.allows("10.0.0.100"));
        let c = AllowList::parse(r"10\.0\.0\.1$").unwrap();
        assert!(c.allows("10.0.0.1") && !c.allows("10.0.0.100"));
        let d = AllowList::parse(r"10\.77\.0\.(5|6)$ \d+\.\d+\.\d+\.9$ (?i)LOCALHOST").unwrap();
        assert!(d.allows("10.77.0.6") && !d.allows("10.77.0.7") && d.allows("1.2.3.9") && d.allows("localhost"));
    }

    #[test]
    fn allow_list_empty_allows_everyone() {
        for s in ["", "   ", "''", "\"\"", " '' "] {
            let a = AllowList::parse(s).unwrap();
            assert!(a.is_any() && a.allows("10.1.2.3") && a.allows("203.0.113.9"), "{s:?}");
        }
        assert!(AllowList::default().allows("1.2.3.4"));
        let q = AllowList::parse(r"'^10\.77\. ^127\.'").unwrap();
        assert!(q.allows("10.77.3.4") && q.allows("127.0.0.1") && !q.allows("10.78.0.1"));
    }

    #[test]
    fn allow_list_bad_patterns() {
        let e = AllowList::parse(r"^10\. ^(10\.77").unwrap_err();
        assert_eq!(e, r"bad relocation-hosts-allow pattern '^(10\.77': unclosed group");
        let e = AllowList::parse("[9-0]").unwrap_err();
        assert!(e.starts_with("bad relocation-hosts-allow pattern '[9-0]': invalid character class range"), "{e}");
        let e = AllowList::parse(r"(?<=10\.)1").unwrap_err();
        assert!(e.contains("look-around") && !e.contains('\n'), "{e}");
        let many = vec!["^10\\."; MAX_ALLOW_PATTERNS + 1].join(" ");
        assert!(AllowList::parse(&many).unwrap_err().contains("more than 32 patterns"));
        assert!(AllowList::parse(&vec!["^10\\."; MAX_ALLOW_PATTERNS].join(" ")).is_ok());
        let long = "a".repeat(MAX_ALLOW_LEN + 1);
        assert!(AllowList::parse(&long).unwrap_err().contains("bytes long"));
        // A pattern whose automaton would be huge is refused, not built.
        let e = AllowList::parse(r"(\d{1,100}){1,100}").unwrap_err();
        assert!(e.ends_with("too complex (its automaton would be over 65536 bytes)"), "{e}");
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(AllowList::parse(&deep).is_err());
    }

    // --- key ----------------------------------------------------------------

    #[test]
    fn psk_from_secret() {
        let e = Psk::from_secret(b"short").unwrap_err();
        assert_eq!(e, "relocation key too short: 5 bytes, need at least 16");
        assert!(Psk::from_secret(b"0123456789abcde\n").unwrap_err().contains("15 bytes"));
        let a = Psk::from_secret(b"0123456789abcdef").unwrap();
        assert_eq!(a.0, Psk::from_secret(b"0123456789abcdef\n").unwrap().0);
        assert_eq!(a.0, Psk::from_secret(b"0123456789abcdef\r\n").unwrap().0);
        assert_ne!(a.0, Psk::from_secret(b"0123456789abcdef\n\n").unwrap().0);
        assert_eq!(a.0, <[u8; 32]>::from(Sha256::digest(b"0123456789abcdef")));
        assert_eq!(format!("{a:?}"), "Psk(<secret>)");
    }

    #[test]
    fn padded_hmac_key_is_the_same_key() {
        let k = [7u8; 32];
        let mut m = <HmacSha256 as Mac>::new_from_slice(&k).unwrap();
        m.update(b"abc");
        let want: [u8; 32] = m.finalize().into_bytes().into();
        assert_eq!(hmac(&k, &[b"a", b"bc"]), want);
    }

    // --- handshake ----------------------------------------------------------

    #[test]
    fn handshake_both_modes_any_chunking() {
        let k = psk("correct horse battery staple");
        for mode in [Mode::Aead, Mode::Plain] {
            for chunk in [0, 1, 2, 3, 5, 7, 64] {
                let o = handshake(&k, &k, mode, true, chunk);
                let (mut c, mut s) = (o.client.unwrap(), o.server.unwrap());
                assert_eq!(c.is_encrypted(), mode == Mode::Aead);
                assert_eq!(s.mode(), mode);
                let f = c.seal(b"to the destination").unwrap();
                let g = s.seal(b"to the source").unwrap();
                let mut got = None;
                feed(&f, chunk, |b| {
                    s.push(b);
                    s.next().unwrap()
                })
                .into_iter()
                .for_each(|m| got = Some(m));
                assert_eq!(got.as_deref(), Some(&b"to the destination"[..]));
                assert_eq!(open_all(&mut c, &g).unwrap(), [b"to the source".to_vec()]);
            }
        }
    }

    #[test]
    fn handshake_wire_format() {
        let k = psk("0123456789abcdef0123");
        let ns = [0x11; 32];
        let nc = [0x22; 32];
        let (mut server, hello) = ServerHandshake::new(k.clone(), ns, false);
        let mut want = vec![36, 0, 0, 0, MSG_HELLO, 1, 0];
        want.extend_from_slice(&ns);
        want.push(0);
        assert_eq!(hello, want);
        let mut client = ClientHandshake::new(k.clone(), nc, Mode::Aead);
        let Ok(ClientStep::Send(auth)) = client.push(&hello) else { panic!() };
        assert_eq!(auth.len(), 4 + AUTH_LEN);
        assert_eq!(&auth[..7], &[68, 0, 0, 0, MSG_AUTH, 1, 0]);
        assert_eq!(&auth[7..39], &nc);
        assert_eq!(auth[39], 0);
        assert_eq!(&auth[40..], &hmac(&k.0, &[b"rhv-relocation v1 client", &ns, &nc, &[0]]));
        let (mut sch, welcome) = server.push(&auth).unwrap().unwrap();
        assert_eq!(&welcome[..5], &[33, 0, 0, 0, MSG_WELCOME]);
        assert_eq!(&welcome[5..], &hmac(&k.0, &[b"rhv-relocation v1 server", &nc, &ns, &[0]]));
        let Ok(ClientStep::Done(mut cch)) = client.push(&welcome) else { panic!() };

        // The channel as specified: key from HMAC, nonce 0^4 || counter, AAD = length.
        let k_c2s = hmac(&k.0, &[b"rhv-relocation v1 c2s", &ns, &nc]);
        let k_s2c = hmac(&k.0, &[b"rhv-relocation v1 s2c", &ns, &nc]);
        assert_ne!(k_c2s, k_s2c);
        cch.seal(b"zero").unwrap();
        let f = cch.seal(b"one").unwrap();
        assert_eq!(&f[..4], &(3u32 + 16).to_le_bytes());
        let aead = ChaCha20Poly1305::new((&k_c2s).into());
        let mut body = f[4..4 + 3].to_vec();
        let tag = Tag::clone_from_slice(&f[7..]);
        let mut n = [0u8; 12];
        n[4] = 1;
        aead.decrypt_in_place_detached(&n.into(), &f[..4], &mut body, &tag).unwrap();
        assert_eq!(body, b"one");
        let g = sch.seal(b"back").unwrap();
        let aead = ChaCha20Poly1305::new((&k_s2c).into());
        let mut body = g[4..8].to_vec();
        aead.decrypt_in_place_detached(&[0u8; 12].into(), &g[..4], &mut body, &Tag::clone_from_slice(&g[8..])).unwrap();
        assert_eq!(body, b"back");
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let o = handshake(&psk("the server's secret key"), &psk("the client's other key"), Mode::Aead, true, 0);
        assert_eq!(o.server.unwrap_err(), HandshakeError::BadClientProof);
        let e = o.client.unwrap_err();
        assert_eq!(e, HandshakeError::Refused("bad key: client's proof does not match".into()));
        assert_eq!(e.to_string(), "refused: bad key: client's proof does not match");
        assert_eq!(e.refuse_frame(), None);
    }

    #[test]
    fn fake_server_cannot_welcome() {
        let k = psk("the real relocation key");
        let mut rng = Rng(99);
        // Learn a genuine WELCOME from an earlier session with the same server nonce.
        let ns = nonce32(&mut rng);
        let (mut real, hello) = ServerHandshake::new(k.clone(), ns, false);
        let mut c1 = ClientHandshake::new(k.clone(), nonce32(&mut rng), Mode::Aead);
        let Ok(ClientStep::Send(auth)) = c1.push(&hello) else { panic!() };
        let (_, old_welcome) = real.push(&auth).unwrap().unwrap();

        // An impostor without the key: it can replay that WELCOME, or make one up.
        let (_, fake_hello) = ServerHandshake::new(psk("the impostor's guess"), ns, false);
        assert_eq!(fake_hello, hello);
        let forged = frame(MSG_WELCOME, &[&nonce32(&mut rng)]);
        for welcome in [old_welcome, forged] {
            let mut c2 = ClientHandshake::new(k.clone(), nonce32(&mut rng), Mode::Aead);
            assert!(matches!(c2.push(&fake_hello), Ok(ClientStep::Send(_))));
            let e = c2.push(&welcome).unwrap_err();
            assert_eq!(e, HandshakeError::BadServerProof);
            assert_eq!(e.to_string(), "bad key: server's proof does not match");
            let refuse = e.refuse_frame().unwrap();
            assert_eq!(&refuse[4..], b"\x04bad key: server's proof does not match");
            assert_eq!(c2.push(b"more").unwrap_err(), HandshakeError::Finished);
        }
    }

    #[test]
    fn replayed_auth_is_refused() {
        let k = psk("the real relocation key");
        let mut rng = Rng(7);
        let (mut s1, hello) = ServerHandshake::new(k.clone(), nonce32(&mut rng), false);
        let mut c = ClientHandshake::new(k.clone(), nonce32(&mut rng), Mode::Aead);
        let Ok(ClientStep::Send(auth)) = c.push(&hello) else { panic!() };
        assert!(s1.push(&auth).unwrap().is_some());
        let (mut s2, _) = ServerHandshake::new(k.clone(), nonce32(&mut rng), false);
        assert_eq!(s2.push(&auth).unwrap_err(), HandshakeError::BadClientProof);
        // And the finished server takes nothing more.
        assert_eq!(s1.push(&auth).unwrap_err(), HandshakeError::Finished);
    }

    #[test]
    fn plain_mode_needs_permission() {
        let k = psk("a long enough secret");
        let o = handshake(&k, &k, Mode::Plain, false, 0);
        assert_eq!(o.server.unwrap_err(), HandshakeError::PlainNotAllowed);
        let e = o.client.unwrap_err();
        assert_eq!(e, HandshakeError::Refused("plain mode not allowed by this host".into()));
        // AEAD is fine either way.
        assert!(handshake(&k, &k, Mode::Aead, false, 0).server.unwrap().is_encrypted());
    }

    #[test]
    fn plain_request_cannot_be_forged_into_aead_or_back() {
        // The mode is inside the client's MAC: flipping it is a bad proof.
        let k = psk("a long enough secret");
        let (mut s, hello) = ServerHandshake::new(k.clone(), [1; 32], true);
        let mut c = ClientHandshake::new(k, [2; 32], Mode::Aead);
        let Ok(ClientStep::Send(mut auth)) = c.push(&hello) else { panic!() };
        auth[4 + 35] = 1;
        assert_eq!(s.push(&auth).unwrap_err(), HandshakeError::BadClientProof);
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let k = psk("a long enough secret");
        let mut c = ClientHandshake::new(k.clone(), [2; 32], Mode::Aead);
        let hello = frame(MSG_HELLO, &[&2u16.to_le_bytes(), &[0; 40]]);
        let e = c.push(&hello).unwrap_err();
        assert_eq!(e, HandshakeError::ServerVersion(2));
        assert_eq!(e.to_string(), "unsupported protocol version: server speaks v2, this host speaks v1");
        assert!(e.refuse_frame().is_some());

        let (mut s, _) = ServerHandshake::new(k, [1; 32], true);
        let auth = frame(MSG_AUTH, &[&7u16.to_le_bytes()]);
        let e = s.push(&auth).unwrap_err();
        assert_eq!(e.to_string(), "unsupported protocol version: client speaks v7, this host speaks v1");
        let refuse = e.refuse_frame().unwrap();
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        match c.push(&refuse).unwrap_err() {
            HandshakeError::Refused(r) => assert!(r.contains("v7") && r.contains("v1"), "{r}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn oversized_and_malformed_handshake_frames() {
        let k = psk("a long enough secret");
        let (mut s, _) = ServerHandshake::new(k.clone(), [1; 32], true);
        assert_eq!(s.push(&[0xff, 0xff, 0xff, 0xff]).unwrap_err(), HandshakeError::FrameTooLong(u32::MAX));
        let (mut s, _) = ServerHandshake::new(k.clone(), [1; 32], true);
        assert_eq!(s.push(&513u32.to_le_bytes()).unwrap_err(), HandshakeError::FrameTooLong(513));
        let mut c = ClientHandshake::new(k.clone(), [2; 32], Mode::Aead);
        assert_eq!(c.push(&[0, 0, 0x10, 0]).unwrap_err(), HandshakeError::FrameTooLong(0x10_0000));
        let mut c = ClientHandshake::new(k.clone(), [2; 32], Mode::Aead);
        assert!(matches!(c.push(&[0, 0, 0, 0]).unwrap_err(), HandshakeError::Malformed(_)));
        // A 512-byte frame is within the limit (and then not an AUTH).
        let (mut s, _) = ServerHandshake::new(k.clone(), [1; 32], true);
        let mut big = 512u32.to_le_bytes().to_vec();
        big.extend_from_slice(&[9; 512]);
        assert!(matches!(s.push(&big).unwrap_err(), HandshakeError::Malformed(_)));
        // Wrong lengths, types and field values.
        let cases: [(&[u8], bool); 6] = [
            (&frame(MSG_AUTH, &[&1u16.to_le_bytes(), &[0; 60]]), true),
            (&frame(MSG_AUTH, &[&[1]]), true),
            (&frame(MSG_WELCOME, &[&[0; 32]]), true),
            (&frame(MSG_HELLO, &[&1u16.to_le_bytes(), &[0; 34]]), false),
            (&frame(MSG_HELLO, &[&1u16.to_le_bytes(), &[0; 32], &[2]]), false),
            (&frame(MSG_REFUSE, &[&[b'x'; 201]]), false),
        ];
        for (bytes, to_server) in cases {
            let e = if to_server {
                ServerHandshake::new(k.clone(), [1; 32], true).0.push(bytes).unwrap_err()
            } else {
                ClientHandshake::new(k.clone(), [2; 32], Mode::Aead).push(bytes).unwrap_err()
            };
            assert!(matches!(e, HandshakeError::Malformed(_)), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn refused_by_allow_list() {
        let frame = refuse_frame("10.9.9.9 is not in relocation-hosts-allow");
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        assert_eq!(
            c.push(&frame).unwrap_err(),
            HandshakeError::Refused("10.9.9.9 is not in relocation-hosts-allow".into())
        );
        // Long reasons are cut at a character boundary; control characters go.
        let long = "é".repeat(150);
        let f = refuse_frame(&long);
        assert_eq!(f.len(), 4 + 1 + 200);
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        let HandshakeError::Refused(r) = c.push(&f).unwrap_err() else { panic!() };
        assert_eq!(r, "é".repeat(100));
        let f = refuse_frame("\x1b[2Jgone\nnext\u{7f}");
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        assert_eq!(c.push(&f).unwrap_err(), HandshakeError::Refused("?[2Jgone?next?".into()));
        // A hostile REFUSE with raw control bytes and bad UTF-8 is cleaned on arrival.
        let raw = [&4u32.to_le_bytes()[..], &[MSG_REFUSE, 0x1b, 0xff, b'a']].concat();
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        assert_eq!(c.push(&raw).unwrap_err(), HandshakeError::Refused("?\u{fffd}a".into()));
    }

    #[test]
    fn bytes_after_welcome_reach_the_channel() {
        let k = psk("a long enough secret");
        let (mut s, hello) = ServerHandshake::new(k.clone(), [1; 32], false);
        let mut c = ClientHandshake::new(k, [2; 32], Mode::Aead);
        let Ok(ClientStep::Send(auth)) = c.push(&hello) else { panic!() };
        let (mut sch, welcome) = s.push(&auth).unwrap().unwrap();
        let mut burst = welcome;
        burst.extend(sch.seal(b"first").unwrap());
        burst.extend(sch.seal(b"second").unwrap());
        let tail = burst.split_off(burst.len() - 5);
        let Ok(ClientStep::Done(mut cch)) = c.push(&burst) else { panic!() };
        assert_eq!(cch.next().unwrap().unwrap(), b"first");
        assert_eq!(cch.next().unwrap(), None);
        assert!(!cch.at_frame_boundary());
        assert_eq!(open_all(&mut cch, &tail).unwrap(), [b"second".to_vec()]);
        assert!(cch.at_frame_boundary());
    }

    #[test]
    fn bytes_sent_with_hello_are_kept() {
        // A server should not send anything after HELLO before the AUTH, but
        // if bytes arrive together with it they are not lost.
        let k = psk("a long enough secret");
        let mut c = ClientHandshake::new(k, [2; 32], Mode::Aead);
        let hello = frame(MSG_HELLO, &[&1u16.to_le_bytes(), &[1; 32], &[0]]);
        let both = [hello.clone(), refuse_frame("busy")].concat();
        assert!(matches!(c.push(&both), Ok(ClientStep::Send(_))));
        assert_eq!(c.push(&[]).unwrap_err(), HandshakeError::Refused("busy".into()));
        let mut c = ClientHandshake::new(psk("a long enough secret"), [2; 32], Mode::Aead);
        let flood = [hello, vec![0; 600]].concat();
        assert!(matches!(c.push(&flood).unwrap_err(), HandshakeError::Malformed(_)));
    }

    #[test]
    fn reflected_frames_do_not_open() {
        // Each direction has its own key: a frame sent back to its sender fails.
        let (mut c, _s) = pair(Mode::Aead);
        let f = c.seal(b"echo").unwrap();
        assert_eq!(open_all(&mut c, &f).unwrap_err(), ChannelError::BadFrame(0));
    }

    // --- channel ------------------------------------------------------------

    #[test]
    fn channel_round_trips() {
        for mode in [Mode::Aead, Mode::Plain] {
            let (mut c, mut s) = pair(mode);
            let mut rng = Rng(3);
            for size in [0, 1, 4096, 2 * 1024 * 1024, MAX_PLAINTEXT] {
                let msg: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
                let f = c.seal(&msg).unwrap();
                let over = if mode == Mode::Aead { TAG_LEN } else { 0 };
                assert_eq!(f.len(), 4 + size + over);
                if mode == Mode::Aead && size > 64 {
                    assert_ne!(&f[4..68], &msg[..64]);
                }
                assert_eq!(open_all(&mut s, &f).unwrap(), core::slice::from_ref(&msg));
                let g = s.seal(&msg).unwrap();
                // Delivered in uneven pieces.
                let mut got = Vec::new();
                for piece in g.chunks(65_521) {
                    s.push(&[]);
                    c.push(piece);
                    while let Some(m) = c.next().unwrap() {
                        got.push(m);
                    }
                }
                assert_eq!(got, [msg]);
            }
            assert_eq!(
                c.seal(&vec![0; MAX_PLAINTEXT + 1]).unwrap_err(),
                ChannelError::PlaintextTooLong(MAX_PLAINTEXT + 1)
            );
            // Refusing an oversized message does not spoil the channel.
            let f = c.seal(b"still fine").unwrap();
            assert_eq!(open_all(&mut s, &f).unwrap(), [b"still fine".to_vec()]);
        }
    }

    // A whole migration stream record fits in one channel message.
    const _: () = assert!(MAX_PLAINTEXT >= crate::migstream::MAX_RECORD);
    const _: () = assert!(MAX_FRAME == 2 * 1024 * 1024 + 8192 + 8 + 16);

    #[test]
    fn same_plaintext_seals_differently() {
        let (mut c, _) = pair(Mode::Aead);
        assert_ne!(c.seal(b"again").unwrap(), c.seal(b"again").unwrap());
    }

    #[test]
    fn tampering_any_byte_fails() {
        let (mut c, s) = pair(Mode::Aead);
        let f = c.seal(b"the migration stream's first record").unwrap();
        for i in 0..f.len() {
            for bit in [0x01, 0x80] {
                let mut t = f.clone();
                t[i] ^= bit;
                let mut r = clone_rx(&s);
                let res = open_all(&mut r, &t);
                // A changed length either waits for more bytes or fails; never opens.
                match res {
                    Ok(v) => assert!(v.is_empty() && i < 4, "byte {i} bit {bit:#x} opened"),
                    Err(_) => assert!(r.next().is_err()),
                }
            }
        }
        // A large frame: a few positions.
        let (mut c, s) = pair(Mode::Aead);
        let f = c.seal(&vec![0x5a; 2 * 1024 * 1024]).unwrap();
        for i in [4, 5, 1 << 20, f.len() - 17, f.len() - 1] {
            let mut t = f.clone();
            t[i] ^= 0x40;
            assert_eq!(open_all(&mut clone_rx(&s), &t).unwrap_err(), ChannelError::BadFrame(0));
        }
        let mut s = clone_rx(&s);
        assert_eq!(open_all(&mut s, &f).unwrap().len(), 1);
    }

    /// A fresh receiver in the same state as `s` (same key, counter 0).
    fn clone_rx(s: &Channel) -> Channel {
        let rx = match &s.rx {
            Cipher::Aead(c) => Cipher::Aead(c.clone()),
            Cipher::Plain => Cipher::Plain,
        };
        let mut ch = Channel::new(s.mode, &[0; 32], &[0; 32]);
        ch.rx = rx;
        ch.rx_seq = s.rx_seq;
        ch
    }

    #[test]
    fn replay_reorder_and_drop_fail() {
        let (mut c, s) = pair(Mode::Aead);
        let f0 = c.seal(b"zero").unwrap();
        let f1 = c.seal(b"one").unwrap();
        let f2 = c.seal(b"two").unwrap();

        let mut r = clone_rx(&s);
        assert_eq!(open_all(&mut r, &f0).unwrap().len(), 1);
        assert_eq!(open_all(&mut r, &f0).unwrap_err(), ChannelError::BadFrame(1)); // replay
        assert_eq!(open_all(&mut r, &f1).unwrap_err(), ChannelError::Dead); // refuses further use
        assert_eq!(r.seal(b"x").unwrap_err(), ChannelError::Dead);

        let mut r = clone_rx(&s);
        assert_eq!(open_all(&mut r, &[&f1[..], &f0[..]].concat()).unwrap_err(), ChannelError::BadFrame(0)); // swap

        let mut r = clone_rx(&s);
        let mut got = Vec::new();
        r.push(&[&f0[..], &f2[..]].concat()); // f1 dropped
        got.push(r.next().unwrap().unwrap());
        assert_eq!(r.next().unwrap_err(), ChannelError::BadFrame(1));
        assert_eq!(got, [b"zero".to_vec()]);

        // Splice: f0's length header with f1's body, or the two bodies glued
        // together under one length.
        let mut r = clone_rx(&s);
        let spliced = [&f0[..4], &f1[4..]].concat();
        assert!(open_all(&mut r, &spliced).is_err() || !r.at_frame_boundary());
        let glued_len = ((f0.len() - 4 + f1.len() - 4) as u32).to_le_bytes();
        let glued = [&glued_len[..], &f0[4..], &f1[4..]].concat();
        assert_eq!(open_all(&mut clone_rx(&s), &glued).unwrap_err(), ChannelError::BadFrame(0));
        let cut = [&((f0.len() - 8) as u32).to_le_bytes()[..], &f0[4..f0.len() - 4]].concat();
        assert_eq!(open_all(&mut clone_rx(&s), &cut).unwrap_err(), ChannelError::BadFrame(0));
    }

    #[test]
    fn oversized_and_short_length_fields() {
        for mode in [Mode::Aead, Mode::Plain] {
            let (_, mut s) = pair(mode);
            let len = (MAX_FRAME + 1) as u32;
            assert_eq!(open_all(&mut s, &len.to_le_bytes()).unwrap_err(), ChannelError::FrameTooLong(len));
            let (_, mut s) = pair(mode);
            assert_eq!(open_all(&mut s, &[0xff; 4]).unwrap_err(), ChannelError::FrameTooLong(u32::MAX));
            let (_, mut s) = pair(mode);
            assert!(open_all(&mut s, &(MAX_FRAME as u32).to_le_bytes()).unwrap().is_empty());
        }
        let (_, mut s) = pair(Mode::Aead);
        assert_eq!(open_all(&mut s, &[15, 0, 0, 0]).unwrap_err(), ChannelError::FrameTooShort(15));
        let (_, mut s) = pair(Mode::Plain);
        assert_eq!(open_all(&mut s, &[0, 0, 0, 0]).unwrap(), [Vec::<u8>::new()]);
    }

    #[test]
    fn receive_buffer_is_bounded() {
        let (mut c, mut s) = pair(Mode::Aead);
        let f = c.seal(&[1; 1000]).unwrap();
        s.push(&f);
        let junk = vec![0; RECV_BUFFER_LIMIT];
        s.push(&junk);
        s.push(&junk);
        assert_eq!(s.next().unwrap().unwrap(), [1; 1000]);
        assert_eq!(s.next().unwrap_err(), ChannelError::Overflow(f.len() + RECV_BUFFER_LIMIT));
        assert_eq!(s.next().unwrap_err(), ChannelError::Dead);
        // Pushing whole frames and draining keeps the buffer small.
        let (mut c, mut s) = pair(Mode::Plain);
        for _ in 0..10 {
            let f = c.seal(&vec![3; MAX_PLAINTEXT]).unwrap();
            s.push(&f[..f.len() / 2]);
            assert_eq!(s.next().unwrap(), None);
            s.push(&f[f.len() / 2..]);
            assert_eq!(s.next().unwrap().unwrap().len(), MAX_PLAINTEXT);
        }
        assert!(s.buf.capacity() <= RECV_BUFFER_LIMIT);
    }

    #[test]
    fn errors_are_one_line() {
        let errs: Vec<String> = vec![
            HandshakeError::BadClientProof.to_string(),
            HandshakeError::FrameTooLong(9999).to_string(),
            HandshakeError::Finished.to_string(),
            ChannelError::BadFrame(3).to_string(),
            ChannelError::Overflow(5).to_string(),
            ChannelError::FrameTooLong(1 << 30).to_string(),
            ChannelError::Exhausted.to_string(),
        ];
        for e in errs {
            assert!(!e.is_empty() && !e.contains('\n'), "{e}");
        }
    }

    // --- fuzz ---------------------------------------------------------------

    fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        match rng.next() % 5 {
            0 if !v.is_empty() => {
                let i = rng.next() as usize % v.len();
                v[i] ^= 1 << (rng.next() % 8);
            }
            1 if !v.is_empty() => {
                let i = rng.next() as usize % v.len();
                v.truncate(i);
            }
            2 => v.extend((0..rng.next() % 40).map(|_| rng.next() as u8)),
            3 if !v.is_empty() => {
                let i = rng.next() as usize % v.len();
                v[i] = rng.next() as u8;
            }
            _ => {
                let n = rng.next() as usize % 80;
                v = (0..n).map(|_| rng.next() as u8).collect();
            }
        }
        v
    }

    fn chunked(rng: &mut Rng, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = 1 + rng.next() as usize % rest.len().min(90);
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn fuzz_handshakes_never_panic() {
        let k = psk("fuzzing relocation key");
        let mut rng = Rng(0xf00d);
        let mut good = 0;
        for _ in 0..3000 {
            let allow_plain = rng.next().is_multiple_of(2);
            let mode = if rng.next().is_multiple_of(2) { Mode::Aead } else { Mode::Plain };
            let (mut server, hello) = ServerHandshake::new(k.clone(), nonce32(&mut rng), allow_plain);
            let mut client = ClientHandshake::new(k.clone(), nonce32(&mut rng), mode);
            let hello = if rng.next().is_multiple_of(3) { mutate(&mut rng, &hello) } else { hello };
            let mut auth = None;
            for piece in chunked(&mut rng, &hello) {
                match client.push(&piece) {
                    Ok(ClientStep::Send(a)) => auth = Some(a),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = (e.to_string(), e.refuse_frame());
                        break;
                    }
                }
            }
            let auth = match auth {
                Some(a) if rng.next().is_multiple_of(3) => mutate(&mut rng, &a),
                Some(a) => a,
                None => (0..rng.next() % 100).map(|_| rng.next() as u8).collect(),
            };
            let mut reply = None;
            for piece in chunked(&mut rng, &auth) {
                match server.push(&piece) {
                    Ok(Some((_, w))) => reply = Some(w),
                    Ok(None) => {}
                    Err(e) => reply = e.refuse_frame(),
                }
                if reply.is_some() {
                    break;
                }
            }
            let reply = match reply {
                Some(r) if rng.next().is_multiple_of(3) => mutate(&mut rng, &r),
                Some(r) => r,
                None => (0..rng.next() % 100).map(|_| rng.next() as u8).collect(),
            };
            for piece in chunked(&mut rng, &reply) {
                match client.push(&piece) {
                    Ok(ClientStep::Done(_)) => good += 1,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
                break;
            }
        }
        assert!(good > 100, "{good}");
    }

    #[test]
    fn fuzz_channel_never_panics() {
        let mut rng = Rng(0xbeef);
        for mode in [Mode::Aead, Mode::Plain] {
            for _ in 0..400 {
                let (mut c, mut s) = pair(mode);
                let mut stream = Vec::new();
                let mut sent = Vec::new();
                for _ in 0..1 + rng.next() % 4 {
                    let m: Vec<u8> = (0..rng.next() % 200).map(|_| rng.next() as u8).collect();
                    stream.extend(c.seal(&m).unwrap());
                    sent.push(m);
                }
                let tampered = !rng.next().is_multiple_of(4);
                if tampered {
                    stream = mutate(&mut rng, &stream);
                }
                let mut got = Vec::new();
                let mut failed = false;
                for piece in chunked(&mut rng, &stream) {
                    s.push(&piece);
                    loop {
                        match s.next() {
                            Ok(Some(m)) => got.push(m),
                            Ok(None) => break,
                            Err(e) => {
                                assert!(!e.to_string().contains('\n'));
                                failed = true;
                                break;
                            }
                        }
                    }
                    if failed {
                        break;
                    }
                }
                if mode == Mode::Aead {
                    // Whatever opened is a prefix of what was sent.
                    assert!(got.len() <= sent.len() && got.iter().zip(&sent).all(|(a, b)| a == b));
                }
                if !tampered {
                    assert_eq!(got, sent);
                }
            }
        }
    }
}
