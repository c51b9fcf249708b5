//! Where the demo's narrative goes: plain lines on stdout, or a channel a
//! test reads.

use std::fmt::Display;
use std::io::Write;

use tokio::sync::mpsc;

/// The demo's output. Cloned into every task that reports something; each
/// call writes whole lines at once, so tasks never interleave mid-line.
#[derive(Debug, Clone)]
pub struct Console {
    sink: Sink,
}

#[derive(Debug, Clone)]
enum Sink {
    Stdout,
    Channel(mpsc::UnboundedSender<String>),
}

impl Console {
    /// Lines on standard output.
    pub fn stdout() -> Self {
        Console { sink: Sink::Stdout }
    }

    /// Lines sent to the returned receiver (one message per call, which may
    /// hold several lines).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Console {
                sink: Sink::Channel(tx),
            },
            rx,
        )
    }

    /// `text` as is (one or more lines).
    pub fn line(&self, text: impl Display) {
        let text = text.to_string();
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (`| head`) must not stop the demo.
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
            Sink::Channel(tx) => {
                let _ = tx.send(text);
            }
        }
    }

    /// `text` after the local time: `12:00:31 globex degrading: …`.
    pub fn event(&self, text: impl Display) {
        self.line(format!("{} {text}", clock()));
    }
}

/// The local time of day, `HH:MM:SS`.
pub(super) fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}
