//! A container's output, on its way to the run store and the screen.
//!
//! Every byte a container writes is appended to its log in the store as it
//! was written (invalid UTF-8, a missing last newline and all), and shown to
//! the user a line at a time. Memory stays bounded whatever the output: a
//! line longer than [`MAX_LINE`] is stored whole but shown in pieces of that
//! size, and the screen is fed through a bounded channel, so a slow screen
//! slows the step down instead of piling its output up in memory. What one
//! read brings is stored with one write and sent as one message (a write
//! and a message per line made 50 MB of short lines take 20 s).

use std::fs::File;
use std::io::{Read, Write as _};
use std::sync::Mutex;
use std::sync::mpsc::SyncSender;

use crate::runtime::Signal;

/// The longest piece of a line shown at once.
pub const MAX_LINE: usize = 16 * 1024;

/// Messages (each at most one read's lines, in one string) in flight
/// between the runtimes and the screen.
pub const CHANNEL_BOUND: usize = 8;

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes (the
/// newline included), keeping at most one line's worth of bytes.
#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    /// Feeds `bytes`; `emit` gets each line (with its newline) or each
    /// [`MAX_LINE`] piece of a longer one.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&window[..=i]);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.pending.len() < MAX_LINE {
                        continue;
                    }
                }
            }
            emit(&self.pending);
            self.pending.clear();
        }
    }

    /// The end of the stream: what is left (a last line without newline).
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// One container's output: its log file in the store and the screen.
/// Several readers (stdout, stderr) may share one; each line stays whole.
#[derive(Debug)]
pub struct Sink {
    file: Mutex<File>,
    tx: SyncSender<Signal>,
    task_run: String,
    container: String,
    /// Secret values to hide in what is stored and shown.
    mask: Option<std::sync::Arc<crate::mask::Masker>>,
}

/// One reader's way into a [`Sink`]: its bytes split into lines, and what
/// one push brings stored with one write and sent as one message.
#[derive(Debug)]
pub struct Stream<'a> {
    sink: &'a Sink,
    splitter: Splitter,
    /// The bytes as written, and the text to show (each line or piece
    /// ending with a newline), not yet stored and sent.
    bytes: Vec<u8>,
    text: String,
    /// The end of a long line's piece held back while Secret values are
    /// masked: a value may go on in the next piece.
    carry: Vec<u8>,
}

impl Sink {
    pub fn new(file: File, tx: SyncSender<Signal>, task_run: &str, container: &str) -> Sink {
        Sink {
            file: Mutex::new(file),
            tx,
            task_run: task_run.to_string(),
            container: container.to_string(),
            mask: None,
        }
    }

    /// This sink, hiding `mask`'s values in every line (stored and shown).
    #[must_use]
    pub fn masking(mut self, mask: Option<std::sync::Arc<crate::mask::Masker>>) -> Sink {
        self.mask = mask;
        self
    }

    /// A stream into this sink, for one reader.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            sink: self,
            splitter: Splitter::default(),
            bytes: Vec::new(),
            text: String::new(),
            carry: Vec::new(),
        }
    }
}

impl Stream<'_> {
    /// Stores and sends the whole lines in `bytes` (and pieces of a long
    /// one); the start of a line waits for its end.
    pub fn push(&mut self, bytes: &[u8]) {
        let (out, text, carry) = (&mut self.bytes, &mut self.text, &mut self.carry);
        let mask = self.sink.mask.as_deref();
        self.splitter
            .push(bytes, &mut |l: &[u8]| take(out, text, carry, l, mask));
        self.flush();
    }

    /// The end of the output: what is left is stored and sent.
    pub fn finish(mut self) {
        let (out, text, carry) = (&mut self.bytes, &mut self.text, &mut self.carry);
        let mask = self.sink.mask.as_deref();
        self.splitter
            .finish(&mut |l: &[u8]| take(out, text, carry, l, mask));
        if let Some(m) = mask
            && !carry.is_empty()
        {
            show(out, text, &m.mask(carry));
        }
        self.flush();
    }

    fn flush(&mut self) {
        if self.text.is_empty() {
            return;
        }
        if let Ok(mut f) = self.sink.file.lock() {
            // A full disk loses the stored copy, never the step: it goes on.
            let _ = f.write_all(&self.bytes);
        }
        self.bytes.clear();
        let _ = self.sink.tx.send(Signal::Lines {
            task_run: self.sink.task_run.clone(),
            container: self.sink.container.clone(),
            text: std::mem::take(&mut self.text),
        });
    }
}

/// Takes a line (or piece), Secret values masked: a piece of a long line
/// is masked up to where a value could still go on in the next piece, and
/// the rest waits in `carry` for it.
fn take(
    out: &mut Vec<u8>,
    text: &mut String,
    carry: &mut Vec<u8>,
    piece: &[u8],
    mask: Option<&crate::mask::Masker>,
) {
    let Some(m) = mask else {
        show(out, text, piece);
        return;
    };
    let mut buf = std::mem::take(carry);
    buf.extend_from_slice(piece);
    if buf.ends_with(b"\n") {
        show(out, text, &m.mask(&buf));
        return;
    }
    let (head, cut) = m.mask_prefix(&buf);
    carry.extend_from_slice(&buf[cut..]);
    if !head.is_empty() {
        show(out, text, &head);
    }
}

/// A line (or piece): stored exactly, shown without its newline.
fn show(out: &mut Vec<u8>, text: &mut String, line: &[u8]) {
    out.extend_from_slice(line);
    let shown = line.strip_suffix(b"\n").unwrap_or(line);
    text.push_str(&String::from_utf8_lossy(shown));
    text.push('\n');
}

/// Reads `from` to its end into `sink`: what each read brings is stored and
/// sent before the next read (nothing read waits in memory for more).
pub fn pump(mut from: impl Read, sink: &Sink) {
    let mut stream = sink.stream();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => stream.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    stream.finish();
}

/// Reads a process's two pipes, each to its end, into `sink` in one thread:
/// whichever has something is read (a line from one never splits one from
/// the other). Ends when both have ended.
pub fn pump_pair(
    a: impl Into<std::os::fd::OwnedFd>,
    b: impl Into<std::os::fd::OwnedFd>,
    sink: &Sink,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    // Each pipe while it is open, with its stream.
    let mut pipes = [a.into(), b.into()].map(|fd| (Some(File::from(fd)), sink.stream()));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open: Vec<usize> = (0..pipes.len()).filter(|i| pipes[*i].0.is_some()).collect();
        if open.is_empty() {
            break;
        }
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|i| pipes[*i].0.as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => open
                    .iter()
                    .zip(&fds)
                    .filter(|(_, f)| f.any().unwrap_or(true))
                    .map(|(i, _)| *i)
                    .collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                // Not to be polled: read each in turn, blocking.
                Err(_) => open,
            }
        };
        for i in ready {
            let (pipe, stream) = &mut pipes[i];
            let Some(file) = pipe.as_mut() else { continue };
            match file.read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) => stream.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *pipe = None,
            }
        }
    }
    for (_, stream) in pipes {
        stream.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        let mut emit = |l: &[u8]| out.push(l.to_vec());
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_are_kept_whole_across_reads_and_every_byte_comes_out() {
        let out = split(&[b"ab", b"c\nde", b"f\n\ng"]);
        assert_eq!(out, [&b"abc\n"[..], b"def\n", b"\n", b"g"]);
    }

    #[test]
    fn a_long_line_comes_out_in_pieces_of_the_limit() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let out = split(&[&input[..1000], &input[1000..]]);
        let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 11, 5]);
        assert_eq!(out.concat(), input, "nothing lost, nothing added");
    }

    #[test]
    fn both_pipes_are_read_whole_in_one_thread_until_both_end() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("tkt-pair-{}.log", std::process::id()));
        let file = File::create(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let sink = Sink::new(file, tx, "tr", "step-a");
        let (out_r, mut out_w) = std::io::pipe().unwrap();
        let (err_r, mut err_w) = std::io::pipe().unwrap();
        // stdout ends first; stderr goes on, then writes a line in two
        // pieces and ends without a newline.
        let writer = std::thread::spawn(move || {
            for i in 0..200 {
                writeln!(out_w, "out {i}").unwrap();
            }
            drop(out_w);
            std::thread::sleep(std::time::Duration::from_millis(50));
            err_w.write_all(b"err hal").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            err_w.write_all(b"f\nlast").unwrap();
        });
        pump_pair(out_r, err_r, &sink);
        writer.join().unwrap();
        let stored = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = stored.lines().collect();
        assert_eq!(lines.len(), 202, "{stored}");
        for (i, line) in lines[..200].iter().enumerate() {
            assert_eq!(*line, format!("out {i}"));
        }
        assert_eq!(&lines[200..], ["err half", "last"]);
        let shown = rx
            .try_iter()
            .filter(|s| matches!(s, Signal::Lines { .. }))
            .count();
        assert!(shown > 0);
    }

    #[test]
    fn a_secret_written_in_two_pieces_is_masked_stored_and_shown() {
        let path = std::env::temp_dir().join(format!("tkt-mask-{}.log", std::process::id()));
        let file = File::create(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let mask = crate::mask::Masker::new([&b"s3cret-value"[..]]);
        let sink = Sink::new(file, tx, "tr", "step-a").masking(Some(std::sync::Arc::new(mask)));
        let mut stream = sink.stream();
        stream.push(b"token=s3cr");
        stream.push(b"et-value ok\nlast s3cret-value");
        stream.finish();
        let stored = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(stored, b"token=*** ok\nlast ***");
        let shown: String = rx
            .try_iter()
            .filter_map(|s| match s {
                Signal::Lines { text, .. } => Some(text),
                Signal::Changed => None,
            })
            .collect();
        assert_eq!(shown, "token=*** ok\nlast ***\n");
    }

    #[test]
    fn a_secret_across_two_pieces_of_a_long_line_is_masked() {
        let path = std::env::temp_dir().join(format!("tkt-mask-long-{}.log", std::process::id()));
        let file = File::create(&path).unwrap();
        let (tx, _rx) = std::sync::mpsc::sync_channel(64);
        let mask = crate::mask::Masker::new([&b"s3cret-value"[..]]);
        let sink = Sink::new(file, tx, "tr", "step-a").masking(Some(std::sync::Arc::new(mask)));
        let mut line = vec![b'x'; MAX_LINE - 5];
        line.extend_from_slice(b"s3cret-value tail\n");
        let mut stream = sink.stream();
        stream.push(&line);
        stream.finish();
        let stored = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut expected = vec![b'x'; MAX_LINE - 5];
        expected.extend_from_slice(b"*** tail\n");
        assert_eq!(stored, expected);
    }

    #[test]
    fn invalid_utf8_passes_through() {
        let out = split(&[b"\xff\xfe ok\n"]);
        assert_eq!(out, [&b"\xff\xfe ok\n"[..]]);
    }
}
