//! The receive side's replay window: which counters of a session were already accepted.
//!
//! Datagrams may arrive late and out of order, so a receiver cannot demand the next
//! counter; it accepts any counter it has not seen that is not too far behind the newest
//! one (RFC 6479's sliding window, as WireGuard uses it). A counter is marked only after
//! its datagram authenticated, so a forged datagram cannot burn a counter.

/// How far behind the newest accepted counter a datagram may still be accepted.
pub const WINDOW: u64 = 1024;

const WORDS: usize = (WINDOW / 64) as usize;

/// Seen counters: the newest, and a bitmap of the `WINDOW` counters before it.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// The newest counter accepted plus one (0 = nothing accepted yet).
    next: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// Whether `counter` could be accepted: new, and not too old. Does not mark it.
    pub fn check(&self, counter: u64) -> bool {
        // `u64::MAX` is never accepted: `next` could not go past it. (Senders stop far
        // earlier, at `MAX_COUNTER`.)
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] & (1 << bit) == 0
    }

    /// Marks `counter` as accepted. Call only after `check` and authentication.
    pub fn mark(&mut self, counter: u64) {
        if counter == u64::MAX {
            return;
        }
        if counter >= self.next {
            // Clear the slots the window moves over (all of them after a big jump).
            let advance = counter + 1 - self.next;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in self.next..=counter {
                    let (word, bit) = Self::slot(c);
                    self.bits[word] &= !(1 << bit);
                }
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= 1 << bit;
    }

    fn slot(counter: u64) -> (usize, u32) {
        let i = counter % WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_is_accepted_once_in_any_order() {
        let mut w = ReplayWindow::default();
        for c in [5u64, 1, 3, 0, 2, 4, 9] {
            assert!(w.check(c), "{c} is new");
            w.mark(c);
            assert!(!w.check(c), "{c} again is a replay");
        }
        for c in [6u64, 7, 8] {
            assert!(w.check(c));
        }
    }

    #[test]
    fn counters_older_than_the_window_are_refused() {
        let mut w = ReplayWindow::default();
        w.mark(10_000);
        assert!(!w.check(10_000 - WINDOW - 1));
        assert!(w.check(10_000 - WINDOW + 1));
        assert!(w.check(10_001));
    }

    #[test]
    fn a_slot_reused_by_the_moving_window_is_fresh_again() {
        let mut w = ReplayWindow::default();
        w.mark(3);
        // 3 + WINDOW lands in the same slot as 3: it must read as new, and 3 as too old.
        assert!(w.check(3 + WINDOW));
        w.mark(3 + WINDOW);
        assert!(!w.check(3));
        assert!(!w.check(3 + WINDOW));
        assert!(w.check(WINDOW + 2), "inside the window and never seen");
    }

    #[test]
    fn the_last_counter_is_refused_not_overflowed() {
        let mut w = ReplayWindow::default();
        assert!(!w.check(u64::MAX));
        w.mark(u64::MAX);
        w.mark(u64::MAX - 1);
        assert!(!w.check(u64::MAX - 1));
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut w = ReplayWindow::default();
        for c in 0..100 {
            w.mark(c);
        }
        w.mark(1 << 40);
        assert!(!w.check(1 << 40));
        assert!(w.check((1 << 40) - 1));
        assert!(!w.check(99));
    }
}
