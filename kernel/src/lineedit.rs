//! A line editor for a VT100/ANSI terminal on a serial line.
//!
//! [`LineEditor`] is a pure state machine: feed it received bytes one at a
//! time and send the terminal output it produces (echo, cursor movement,
//! redraws, bell). It edits one line of printable ASCII in insert mode and
//! keeps a bounded history. It assumes the prompt has been printed and the
//! terminal cursor sits just after it; all cursor movement is relative.
//!
//! Keys: printable ASCII inserts; Enter (CR, LF or CRLF) submits; Backspace
//! and Delete erase; Left/Right, Home/End and Ctrl-A/Ctrl-E move; Up/Down
//! walk the history; Ctrl-U clears the line; Ctrl-C cancels it.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem;

/// The most parameter and intermediate bytes kept from one CSI sequence;
/// a longer sequence is abandoned.
const MAX_SEQUENCE: usize = 16;

const BELL: u8 = 0x07;
const BACKSPACE: u8 = 0x08;
const ESC: u8 = 0x1B;

/// Something the user finished.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Enter was pressed on this line.
    Line(String),
    /// Ctrl-C discarded the line.
    Cancelled,
}

/// An editing key decoded from an escape sequence or control byte.
#[derive(Debug, Clone, Copy)]
enum Key {
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    Delete,
}

/// Progress through an escape sequence.
#[derive(Debug, Clone, Copy, Default)]
enum Escape {
    #[default]
    None,
    /// After `ESC`.
    Esc,
    /// After `ESC O`.
    Ss3,
    /// After `ESC [`, with the parameter and intermediate bytes so far.
    Csi { bytes: [u8; MAX_SEQUENCE], len: usize },
}

/// The editor state: the line, the cursor, the history and a partially
/// received escape sequence.
#[derive(Debug, Clone)]
pub struct LineEditor {
    /// The line being edited; printable ASCII only, at most `max_len` bytes.
    line: String,
    /// Byte offset of the cursor in `line`.
    cursor: usize,
    max_len: usize,
    /// Submitted lines, oldest first, at most `history_cap`.
    history: VecDeque<String>,
    history_cap: usize,
    /// The history entry shown, while browsing with Up/Down.
    browsing: Option<usize>,
    /// The line as it was typed before browsing started.
    draft: String,
    escape: Escape,
    /// The CR or LF that submitted a line, if it was the previous byte: the
    /// other one of a CRLF or LFCR pair is ignored.
    eol: Option<u8>,
}

impl LineEditor {
    /// An empty editor for lines of at most `max_len` bytes, remembering the
    /// last `history_cap` distinct lines.
    pub fn new(max_len: usize, history_cap: usize) -> Self {
        Self {
            line: String::new(),
            cursor: 0,
            max_len,
            history: VecDeque::new(),
            history_cap,
            browsing: None,
            draft: String::new(),
            escape: Escape::None,
            eol: None,
        }
    }

    /// Feeds one received byte; terminal output (echo, cursor moves,
    /// redraws, bell) is appended to `out`.
    pub fn feed(&mut self, byte: u8, out: &mut Vec<u8>) -> Option<Event> {
        let eol = self.eol.take();
        // A control byte interrupts an escape sequence and is handled as
        // usual, so Ctrl-C and Enter always work.
        let control = byte < 0x20;
        match mem::take(&mut self.escape) {
            Escape::None => {}
            Escape::Esc if !control => {
                self.escape = match byte {
                    b'[' => Escape::Csi { bytes: [0; MAX_SEQUENCE], len: 0 },
                    b'O' => Escape::Ss3,
                    _ => Escape::None,
                };
                return None;
            }
            Escape::Ss3 if !control => {
                if let Some(key) = ss3_key(byte) {
                    self.key(key, out);
                }
                return None;
            }
            Escape::Csi { mut bytes, len } => match byte {
                0x20..=0x3F => {
                    // Past MAX_SEQUENCE bytes the sequence is abandoned.
                    if let Some(slot) = bytes.get_mut(len) {
                        *slot = byte;
                        self.escape = Escape::Csi { bytes, len: len + 1 };
                    }
                    return None;
                }
                0x40..=0x7E => {
                    if let Some(key) = csi_key(byte, bytes.get(..len).unwrap_or(&[])) {
                        self.key(key, out);
                    }
                    return None;
                }
                _ => {}
            },
            Escape::Esc | Escape::Ss3 => {}
        }
        match byte {
            b'\r' | b'\n' if eol.is_some_and(|first| first != byte) => {}
            b'\r' | b'\n' => {
                self.eol = Some(byte);
                return Some(self.submit(out));
            }
            0x03 => return Some(self.cancel(out)),
            0x01 => self.key(Key::Home, out),
            0x05 => self.key(Key::End, out),
            0x15 => self.replace_line(String::new(), out),
            0x7F | BACKSPACE => self.backspace(out),
            ESC => self.escape = Escape::Esc,
            0x20..=0x7E => self.insert(byte, out),
            _ => {}
        }
        None
    }

    /// The line being edited.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The cursor position, in bytes from the start of the line.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The number of lines in the history.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The history, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    /// Writes the line and puts the cursor back in place, e.g. after the
    /// prompt was reprinted because something else wrote to the terminal.
    pub fn redraw(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.line.as_bytes());
        move_cursor(out, self.line.len() - self.cursor, b'D');
    }

    fn insert(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.line.len() >= self.max_len {
            out.push(BELL);
            return;
        }
        self.line.insert(self.cursor, char::from(byte));
        self.cursor += 1;
        out.push(byte);
        self.redraw_tail(out, false);
    }

    fn backspace(&mut self, out: &mut Vec<u8>) {
        if self.cursor == 0 {
            out.push(BELL);
            return;
        }
        self.cursor -= 1;
        self.line.remove(self.cursor);
        out.push(BACKSPACE);
        self.redraw_tail(out, true);
    }

    fn key(&mut self, key: Key, out: &mut Vec<u8>) {
        let len = self.line.len();
        match key {
            Key::Left if self.cursor > 0 => {
                self.cursor -= 1;
                move_cursor(out, 1, b'D');
            }
            Key::Right if self.cursor < len => {
                self.cursor += 1;
                move_cursor(out, 1, b'C');
            }
            Key::Delete if self.cursor < len => {
                self.line.remove(self.cursor);
                self.redraw_tail(out, true);
            }
            Key::Left | Key::Right | Key::Delete => out.push(BELL),
            Key::Home => {
                move_cursor(out, self.cursor, b'D');
                self.cursor = 0;
            }
            Key::End => {
                move_cursor(out, len - self.cursor, b'C');
                self.cursor = len;
            }
            Key::Up => self.history_up(out),
            Key::Down => self.history_down(out),
        }
    }

    fn history_up(&mut self, out: &mut Vec<u8>) {
        let index = match self.browsing {
            None if !self.history.is_empty() => {
                self.draft.clone_from(&self.line);
                self.history.len() - 1
            }
            Some(index) if index > 0 => index - 1,
            _ => {
                out.push(BELL);
                return;
            }
        };
        self.show_history(index, out);
    }

    fn history_down(&mut self, out: &mut Vec<u8>) {
        match self.browsing {
            None => out.push(BELL),
            Some(index) if index + 1 < self.history.len() => self.show_history(index + 1, out),
            Some(_) => {
                self.browsing = None;
                let draft = mem::take(&mut self.draft);
                self.replace_line(draft, out);
            }
        }
    }

    fn show_history(&mut self, index: usize, out: &mut Vec<u8>) {
        self.browsing = Some(index);
        let entry = self.history.get(index).cloned().unwrap_or_default();
        self.replace_line(entry, out);
    }

    /// Replaces the whole line on screen and in the buffer, leaving the
    /// cursor at its end.
    fn replace_line(&mut self, text: String, out: &mut Vec<u8>) {
        move_cursor(out, self.cursor, b'D');
        if !self.line.is_empty() {
            out.extend_from_slice(b"\x1b[K");
        }
        out.extend_from_slice(text.as_bytes());
        self.cursor = text.len();
        self.line = text;
    }

    /// Rewrites the line from the cursor on (erasing what was beyond its
    /// end if `erase`) and moves the cursor back.
    fn redraw_tail(&self, out: &mut Vec<u8>, erase: bool) {
        let tail = self.line.get(self.cursor..).unwrap_or("");
        out.extend_from_slice(tail.as_bytes());
        if erase {
            out.extend_from_slice(b"\x1b[K");
        }
        move_cursor(out, tail.len(), b'D');
    }

    fn submit(&mut self, out: &mut Vec<u8>) -> Event {
        out.extend_from_slice(b"\r\n");
        let line = mem::take(&mut self.line);
        self.reset();
        if !line.is_empty() && self.history.back() != Some(&line) && self.history_cap > 0 {
            while self.history.len() >= self.history_cap {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        Event::Line(line)
    }

    fn cancel(&mut self, out: &mut Vec<u8>) -> Event {
        out.extend_from_slice(b"^C\r\n");
        self.line.clear();
        self.reset();
        Event::Cancelled
    }

    /// Forgets the cursor position and any history browsing.
    fn reset(&mut self) {
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
    }
}

/// Decodes the final byte of `ESC O x`.
fn ss3_key(byte: u8) -> Option<Key> {
    match byte {
        b'A' => Some(Key::Up),
        b'B' => Some(Key::Down),
        b'C' => Some(Key::Right),
        b'D' => Some(Key::Left),
        b'H' => Some(Key::Home),
        b'F' => Some(Key::End),
        _ => None,
    }
}

/// Decodes `ESC [ params final`. Modifiers (`ESC [ 1 ; 5 C`) are ignored.
fn csi_key(final_byte: u8, params: &[u8]) -> Option<Key> {
    match (final_byte, params) {
        (b'~', b"1" | b"7") => Some(Key::Home),
        (b'~', b"4" | b"8") => Some(Key::End),
        (b'~', b"3") => Some(Key::Delete),
        (b'~', _) => None,
        (byte, _) => ss3_key(byte),
    }
}

/// Emits `ESC [ n D` (left) or `ESC [ n C` (right); nothing for `n == 0`.
fn move_cursor(out: &mut Vec<u8>, n: usize, direction: u8) {
    if n == 0 {
        return;
    }
    out.extend_from_slice(b"\x1b[");
    if n > 1 {
        push_decimal(out, n);
    }
    out.push(direction);
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    out.push(b'0' + (n % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// A one-line terminal that understands exactly what the editor emits
    /// and panics on anything else, such as moving the cursor outside the
    /// line (into the prompt).
    #[derive(Default)]
    struct Screen {
        row: Vec<u8>,
        col: usize,
        done: Vec<String>,
        bells: usize,
    }

    impl Screen {
        fn apply(&mut self, mut bytes: &[u8]) {
            while let Some((&b, rest)) = bytes.split_first() {
                bytes = rest;
                match b {
                    BELL => self.bells += 1,
                    BACKSPACE => self.col = self.col.checked_sub(1).expect("backspace at column 0"),
                    b'\r' => self.col = 0,
                    b'\n' => {
                        self.done.push(String::from_utf8(mem::take(&mut self.row)).unwrap());
                    }
                    ESC => {
                        assert_eq!(bytes.first(), Some(&b'['), "only CSI is emitted");
                        let end = bytes.iter().position(|b| b.is_ascii_alphabetic()).unwrap();
                        let count = core::str::from_utf8(&bytes[1..end]).unwrap();
                        let n = if count.is_empty() { 1 } else { count.parse().unwrap() };
                        assert!(n > 0);
                        match bytes[end] {
                            b'D' => self.col = self.col.checked_sub(n).expect("moved into the prompt"),
                            b'C' => {
                                self.col += n;
                                assert!(self.col <= self.row.len(), "moved past the line");
                            }
                            b'K' => {
                                assert_eq!(count, "");
                                self.row.truncate(self.col);
                            }
                            other => panic!("unexpected CSI final {other:#x}"),
                        }
                        bytes = &bytes[end + 1..];
                    }
                    0x20..=0x7E => {
                        assert!(self.col <= self.row.len());
                        if self.col == self.row.len() {
                            self.row.push(b);
                        } else {
                            self.row[self.col] = b;
                        }
                        self.col += 1;
                    }
                    other => panic!("unexpected output byte {other:#x}"),
                }
            }
        }
    }

    /// An editor wired to a [`Screen`] that checks, after every byte, that
    /// the screen shows exactly the line with the cursor in the right place.
    struct Term {
        ed: LineEditor,
        screen: Screen,
        events: Vec<Event>,
        out: Vec<u8>,
    }

    impl Term {
        fn new(max_len: usize, history_cap: usize) -> Self {
            Self {
                ed: LineEditor::new(max_len, history_cap),
                screen: Screen::default(),
                events: Vec::new(),
                out: Vec::new(),
            }
        }

        fn feed(&mut self, bytes: &[u8]) -> &mut Self {
            for &b in bytes {
                self.out.clear();
                self.events.extend(self.ed.feed(b, &mut self.out));
                self.screen.apply(&self.out);
                assert_eq!(self.screen.row, self.ed.line().as_bytes());
                assert_eq!(self.screen.col, self.ed.cursor());
                assert!(self.ed.line().len() <= self.ed.max_len);
                assert!(self.ed.cursor() <= self.ed.line().len());
            }
            self
        }

        fn take_events(&mut self) -> Vec<Event> {
            mem::take(&mut self.events)
        }
    }

    fn line(s: &str) -> Event {
        Event::Line(s.to_string())
    }

    /// Feeds `input` into a fresh editor and returns the events and output.
    fn run(input: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut ed = LineEditor::new(80, 8);
        let mut out = Vec::new();
        let events = input.iter().filter_map(|&b| ed.feed(b, &mut out)).collect();
        (events, out)
    }

    #[test]
    fn typing_and_enter() {
        let (events, out) = run(b"help\r");
        assert_eq!(events, [line("help")]);
        assert_eq!(out, b"help\r\n");
        assert_eq!(run(b"\r").0, [line("")]);
    }

    #[test]
    fn insert_in_the_middle() {
        let mut t = Term::new(80, 8);
        t.feed(b"hlp\x1b[D\x1b[De");
        assert_eq!(t.ed.line(), "help");
        assert_eq!(t.ed.cursor(), 2);
        t.feed(b"\r");
        assert_eq!(t.take_events(), [line("help")]);
        assert_eq!(t.screen.done, ["help"]);
        // The insertion redrew the tail and moved back over it.
        let (_, out) = run(b"hlp\x1b[D\x1b[De");
        assert_eq!(out, b"hlp\x1b[D\x1b[Delp\x1b[2D");
    }

    #[test]
    fn ss3_arrows_and_home_end() {
        let mut t = Term::new(80, 8);
        t.feed(b"bc\x1bOD\x1bODa\x1bOCX");
        assert_eq!(t.ed.line(), "abXc");
        for (home, end) in [
            (&b"\x1b[H"[..], &b"\x1b[F"[..]),
            (b"\x1bOH", b"\x1bOF"),
            (b"\x1b[1~", b"\x1b[4~"),
            (b"\x1b[7~", b"\x1b[8~"),
            (b"\x01", b"\x05"),
        ] {
            t.feed(home);
            assert_eq!(t.ed.cursor(), 0);
            t.feed(b"<");
            t.feed(end);
            assert_eq!(t.ed.cursor(), t.ed.line().len());
            t.feed(b">");
        }
        assert_eq!(t.ed.line(), "<<<<<abXc>>>>>");
        // Modified arrows (Ctrl-Left) still move.
        t.feed(b"\x1b[1;5D");
        assert_eq!(t.ed.cursor(), 13);
    }

    #[test]
    fn arrows_ring_the_bell_at_the_ends() {
        let mut t = Term::new(80, 8);
        t.feed(b"\x1b[D");
        assert_eq!(t.screen.bells, 1);
        t.feed(b"ab\x1b[C");
        assert_eq!(t.screen.bells, 2);
        t.feed(b"\x1b[D\x1b[D\x1b[D");
        assert_eq!(t.screen.bells, 3);
        assert_eq!(t.ed.cursor(), 0);
    }

    #[test]
    fn backspace_and_delete() {
        let mut t = Term::new(80, 8);
        t.feed(b"abcd\x7f");
        assert_eq!(t.ed.line(), "abc");
        t.feed(b"\x1b[D\x08");
        assert_eq!((t.ed.line(), t.ed.cursor()), ("ac", 1));
        t.feed(b"\x1b[3~");
        assert_eq!((t.ed.line(), t.ed.cursor()), ("a", 1));
        t.feed(b"\x1b[3~");
        assert_eq!(t.screen.bells, 1);
        t.feed(b"\x01\x1b[3~\x7f");
        assert_eq!(t.ed.line(), "");
        assert_eq!(t.screen.bells, 2);
        assert_eq!(run(b"ab\x7f").1, b"ab\x08\x1b[K");
    }

    #[test]
    fn ctrl_u_clears_the_line() {
        let mut t = Term::new(80, 8);
        t.feed(b"some text\x1b[D\x1b[D\x15");
        assert_eq!((t.ed.line(), t.ed.cursor()), ("", 0));
        t.feed(b"ok\r");
        assert_eq!(t.take_events(), [line("ok")]);
        assert_eq!(run(b"ab\x1b[D\x15").1, b"ab\x1b[D\x1b[D\x1b[K");
        assert_eq!(run(b"\x15").1, b"");
    }

    #[test]
    fn ctrl_c_cancels() {
        let mut t = Term::new(80, 8);
        t.feed(b"one\rpartial\x03");
        assert_eq!(t.take_events(), [line("one"), Event::Cancelled]);
        assert_eq!(t.screen.done, ["one", "partial^C"]);
        assert_eq!(t.ed.line(), "");
        // Browsing is reset: Up starts from the newest entry again.
        t.feed(b"\x1b[A\x03\x1b[A");
        assert_eq!(t.ed.line(), "one");
        assert_eq!(t.ed.history_len(), 1);
    }

    #[test]
    fn line_endings() {
        for (input, n) in [
            (&b"a\r\nb\r\n"[..], 2),
            (b"a\n\rb\n\r", 2),
            (b"a\nb\n", 2),
            (b"a\r\r", 2),
            (b"a\n\n", 2),
            (b"\r\n\r\n", 2),
            (b"\r\n\n", 2),
            (b"a\rx\n", 2),
        ] {
            assert_eq!(run(input).0.len(), n, "{input:?}");
        }
        assert_eq!(run(b"a\r\nb\r\n").0, [line("a"), line("b")]);
        assert_eq!(run(b"a\r\nb\r\n").1, b"a\r\nb\r\n");
    }

    #[test]
    fn history_browsing() {
        let mut t = Term::new(80, 8);
        t.feed(b"one\rtwo\rthree\rdraft");
        t.feed(b"\x1b[A");
        assert_eq!(t.ed.line(), "three");
        t.feed(b"\x1b[A");
        assert_eq!(t.ed.line(), "two");
        t.feed(b"\x1bOA\x1b[A");
        assert_eq!(t.ed.line(), "one");
        assert_eq!(t.screen.bells, 1);
        t.feed(b"\x1b[B");
        assert_eq!(t.ed.line(), "two");
        t.feed(b"\x1bOB\x1b[B");
        assert_eq!(t.ed.line(), "draft");
        t.feed(b"\x1b[B");
        assert_eq!(t.screen.bells, 2);
        // Recall, edit and submit.
        t.take_events();
        t.feed(b"\x15\x1b[A\x1b[A\x7f\x7f\x7fTWO\r");
        assert_eq!(t.take_events(), [line("TWO")]);
        assert_eq!(t.ed.history().collect::<Vec<_>>(), ["one", "two", "three", "TWO"]);
    }

    #[test]
    fn history_up_on_empty_history_rings() {
        let mut t = Term::new(80, 8);
        t.feed(b"x\x1b[A\x1b[B");
        assert_eq!(t.ed.line(), "x");
        assert_eq!(t.screen.bells, 2);
    }

    #[test]
    fn history_is_bounded_and_deduplicated() {
        let mut t = Term::new(80, 3);
        t.feed(b"a\rb\rb\r\r\rc\rd\r");
        assert_eq!(t.ed.history().collect::<Vec<_>>(), ["b", "c", "d"]);
        t.feed(b"b\r");
        assert_eq!(t.ed.history().collect::<Vec<_>>(), ["c", "d", "b"]);

        let mut none = Term::new(80, 0);
        none.feed(b"a\r\x1b[A");
        assert_eq!(none.ed.history_len(), 0);
        assert_eq!(none.ed.line(), "");
    }

    #[test]
    fn full_line_rings_and_drops() {
        let mut t = Term::new(4, 8);
        t.feed(b"abcdef");
        assert_eq!(t.ed.line(), "abcd");
        assert_eq!(t.screen.bells, 2);
        t.feed(b"\x01x\x7fX\r");
        assert_eq!(t.take_events(), [line("abcd")]);

        let mut zero = Term::new(0, 8);
        zero.feed(b"abc\r");
        assert_eq!(zero.take_events(), [line("")]);
        assert_eq!(zero.screen.bells, 3);
    }

    #[test]
    fn escape_sequences_are_bounded() {
        // Unknown CSI sequences are consumed up to their final byte.
        assert_eq!(run(b"\x1b[200~x\x1b[?25hy\x1b[5~\r").0, [line("xy")]);
        // A sequence of more than 16 parameter bytes is abandoned.
        let mut long = b"\x1b[".to_vec();
        long.extend_from_slice(&[b'1'; 17]);
        long.extend_from_slice(b"x\r");
        assert_eq!(run(&long).0, [line("x")]);
        // ESC followed by anything but '[' or 'O' is dropped with it.
        assert_eq!(run(b"\x1bxy\x1bOZz\r").0, [line("yz")]);
        // Control bytes interrupt a sequence and act normally.
        assert_eq!(run(b"ab\x1b\x03").0, [Event::Cancelled]);
        assert_eq!(run(b"ab\x1b[1\r").0, [line("ab")]);
        assert_eq!(run(b"ab\x1bO\x7f\r").0, [line("ab")]);
        assert_eq!(run(b"ab\x1b\x1b[D\x08\r").0, [line("b")]);
    }

    #[test]
    fn other_bytes_are_ignored_silently() {
        let mut ignored: Vec<u8> =
            (0x00..0x20).filter(|b| ![0x01, 0x03, 0x05, 0x08, 0x0A, 0x0D, 0x15, 0x1B].contains(b)).collect();
        ignored.extend(0x80..=0xFF);
        let (events, out) = run(&ignored);
        assert!(events.is_empty());
        assert!(out.is_empty());
    }

    #[test]
    fn redraw_restores_the_cursor() {
        let mut t = Term::new(80, 8);
        t.feed(b"hello\x1b[D\x1b[D");
        let mut out = Vec::new();
        t.ed.redraw(&mut out);
        let mut screen = Screen::default();
        screen.apply(&out);
        assert_eq!((screen.row.as_slice(), screen.col), (&b"hello"[..], 3));
    }

    #[test]
    fn long_moves_use_a_count() {
        let mut t = Term::new(200, 8);
        t.feed(&[b'x'; 123]).feed(b"\x01");
        assert_eq!(t.out, b"\x1b[123D");
        t.feed(b"\x05");
        assert_eq!(t.out, b"\x1b[123C");
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn recovers(t: &mut Term) {
        t.take_events();
        t.feed(b"\x03help\r");
        assert_eq!(t.take_events(), [Event::Cancelled, line("help")]);
    }

    #[test]
    fn random_bytes_never_break_it() {
        let mut t = Term::new(32, 16);
        let mut state = 0x2545_F491_4F6C_DD1D;
        let bytes: Vec<u8> = (0..1 << 20).map(|_| xorshift(&mut state) as u8).collect();
        t.feed(&bytes);
        assert!(t.ed.history_len() <= 16);
        assert!(t.ed.history().all(|h| !h.is_empty() && h.len() <= 32));
        recovers(&mut t);
    }

    #[test]
    fn random_keystrokes_never_break_it() {
        // Biased towards editing keys so every path is exercised often.
        let keys: [&[u8]; 24] = [
            b"a", b"b", b"Z", b" ", b"\x7f", b"\x08", b"\x01", b"\x05", b"\x15", b"\r", b"\n", b"\x03", b"\x1b[A",
            b"\x1b[B", b"\x1b[C", b"\x1b[D", b"\x1bOA", b"\x1b[3~", b"\x1b[1~", b"\x1b[4~", b"\x1b", b"[", b"~",
            b"\x1b[9",
        ];
        for (max_len, cap) in [(8, 4), (1, 1), (0, 0), (64, 2)] {
            let mut t = Term::new(max_len, cap);
            let mut state = 0x9E37_79B9_7F4A_7C15 ^ max_len as u64;
            for _ in 0..50_000 {
                let key = keys[xorshift(&mut state) as usize % keys.len()];
                t.feed(key);
            }
            for event in t.take_events() {
                if let Event::Line(l) = event {
                    assert!(l.len() <= max_len);
                }
            }
            assert!(t.ed.history_len() <= cap);
            if max_len >= 4 {
                recovers(&mut t);
            }
        }
    }
}
