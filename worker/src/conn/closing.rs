//! The end of a connection: its last answer sent, then its read side
//! drained before the close, so that the kernel does not reset what the
//! client has not read yet; and the requests refused on the way.

use std::io;

use super::{Conn, Input, LINGER_MAX_BYTES, LINGER_MS, Next, Phase, Served};
use crate::context::{Cx, Shared};
use crate::exchange::count_refused;
use crate::parse::{self, HeadError};
use crate::response;

impl Conn {
    pub(super) fn closing_state(&mut self, shared: &mut Shared) -> Next {
        if self.wpos == self.wbuf.len() {
            // Closing with unread input makes the kernel reset the
            // connection, and the client loses the answer it has not read
            // yet: shut our side and drain first.
            let unread_input = matches!(self.phase, Phase::Closing { unread_input: true });
            if (unread_input || self.rstart < self.rend) && self.input != Input::Eof {
                return self.start_lingering(shared);
            }
            return Next::Close;
        }
        // Output is still pending: give it until the I/O timeout.
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing {
                unread_input: false,
            };
        }
        self.deadline_ms = shared.now_ms + shared.settings.io_timeout_ms;
        Next::Keep
    }

    fn start_lingering(&mut self, shared: &mut Shared) -> Next {
        let _ = self.stream.shutdown_write();
        self.phase = Phase::Lingering { dropped: 0 };
        self.deadline_ms = shared.now_ms + LINGER_MS;
        (self.rstart, self.rend) = (0, 0);
        self.linger(shared)
    }

    /// Read and drop what the client sends until it closes.
    pub(super) fn linger(&mut self, shared: &mut Shared) -> Next {
        if self.rbuf.is_empty() {
            self.rbuf = shared.take_read_buffer();
        }
        loop {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    let Phase::Lingering { dropped } = &mut self.phase else {
                        return Next::Close;
                    };
                    *dropped += n;
                    if *dropped > LINGER_MAX_BYTES {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// A head the parser refused: the server's answer, counted, and the
    /// connection closed after it (the rest of the request may still be
    /// coming).
    #[cold]
    pub(super) fn refuse_head(&mut self, cx: &mut Cx<'_>, e: HeadError) -> Served {
        let method_is_head = parse::is_head_request(&self.rbuf[self.rstart..self.rend]);
        log::debug!(
            "refusing a request from {}: {e}",
            String::from_utf8_lossy(self.peer.addr())
        );
        let before = self.wbuf.len();
        response::error(&mut self.wbuf, e.status(), cx.date, method_is_head);
        count_refused(
            cx.settings,
            &self.rbuf[self.rstart..self.rend],
            e.status(),
            self.wbuf.len() - before,
        );
        Served::Close { unread_input: true }
    }

    /// A trusted proxy's scheme headers disagree: 400, as Gunicorn answers.
    #[cold]
    pub(super) fn refuse_scheme(&mut self, cx: &mut Cx<'_>, method_is_head: bool) -> Served {
        log::debug!(
            "refusing a request from {}: its X-Forwarded-Proto, X-Forwarded-Protocol and X-Forwarded-Ssl disagree",
            String::from_utf8_lossy(self.peer.addr())
        );
        response::error(&mut self.wbuf, 400, cx.date, method_is_head);
        Served::Close { unread_input: true }
    }
}
