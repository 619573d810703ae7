//! The review state machine shared by every trust workflow whose candidates a person decides
//! (third-party capability handlers, §7.2; pip lock files, §9): scan → `pending`; approve →
//! `installed` (or `failed`); reject with a cooldown, the third rejection → `blocked`; unblock →
//! `pending`. A record keeps its own identity fields; [`Review`] borrows its decision fields, so
//! each workflow has the same rules without a copy of them.

use super::candidate::{CandidateStatus, Refused, REJECTS_TO_BLOCK, REJECT_COOLDOWN_SECS};

/// Longest reason or note kept.
pub const MAX_NOTE_CHARS: usize = 500;

/// The decision fields of one record, borrowed.
pub struct Review<'a> {
    pub status: &'a mut CandidateStatus,
    pub reject_count: &'a mut u32,
    /// Unix seconds until which a rejected candidate stays rejected.
    pub cooldown_until: &'a mut Option<i64>,
    pub last_reason: &'a mut String,
    /// Unix seconds of the last change.
    pub updated_at: &'a mut i64,
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Review<'_> {
    /// A scan found it again: a rejected candidate whose cooldown has passed is offered again
    /// (its count kept, so the next rejection may block it); a failed one is pending again.
    /// Answers whether anything changed.
    pub fn rescanned(&mut self, now: i64) -> bool {
        let offer = match *self.status {
            CandidateStatus::Rejected => self.cooldown_until.is_none_or(|t| now >= t),
            CandidateStatus::Failed => true,
            _ => false,
        };
        if offer {
            *self.status = CandidateStatus::Pending;
            *self.updated_at = now;
        }
        offer
    }

    /// Whether approve may proceed; `unblock_hint` names the unblock endpoint of the workflow.
    pub fn may_approve(&self, unblock_hint: &str) -> Result<(), Refused> {
        match *self.status {
            CandidateStatus::Blocked => Err(Refused(format!(
                "the candidate is blocked (rejected three times); unblock it first with {unblock_hint}"
            ))),
            CandidateStatus::Installed => Err(Refused("the candidate is installed already".into())),
            _ => Ok(()),
        }
    }

    /// The approval completed.
    pub fn approved(&mut self, notes: &str, now: i64) {
        *self.status = CandidateStatus::Installed;
        *self.cooldown_until = None;
        *self.last_reason = clip(notes, MAX_NOTE_CHARS);
        *self.updated_at = now;
    }

    /// The approval failed after its checks.
    pub fn failed(&mut self, why: &str, now: i64) {
        *self.status = CandidateStatus::Failed;
        *self.last_reason = clip(why, MAX_NOTE_CHARS);
        *self.updated_at = now;
    }

    /// Reject: `rejected` with the cooldown, or `blocked` at the third rejection. A rejected
    /// candidate accepts further rejections (they count); a blocked or installed one does not.
    pub fn reject(&mut self, reason: &str, now: i64) -> Result<(), Refused> {
        match *self.status {
            CandidateStatus::Blocked => {
                return Err(Refused("the candidate is blocked already".into()))
            }
            CandidateStatus::Installed => {
                return Err(Refused(
                    "the candidate is installed; it cannot be rejected".into(),
                ))
            }
            _ => {}
        }
        *self.reject_count = self.reject_count.saturating_add(1);
        *self.last_reason = clip(reason, MAX_NOTE_CHARS);
        *self.updated_at = now;
        if *self.reject_count >= REJECTS_TO_BLOCK {
            *self.status = CandidateStatus::Blocked;
            *self.cooldown_until = None;
        } else {
            *self.status = CandidateStatus::Rejected;
            *self.cooldown_until = Some(now + REJECT_COOLDOWN_SECS);
        }
        Ok(())
    }

    /// Unblock: `pending`, the count and the cooldown reset.
    pub fn unblock(&mut self, reason: &str, now: i64) -> Result<(), Refused> {
        if *self.status != CandidateStatus::Blocked {
            return Err(Refused(format!(
                "the candidate is {}, not blocked",
                self.status.as_str()
            )));
        }
        *self.status = CandidateStatus::Pending;
        *self.reject_count = 0;
        *self.cooldown_until = None;
        *self.last_reason = clip(reason, MAX_NOTE_CHARS);
        *self.updated_at = now;
        Ok(())
    }
}
