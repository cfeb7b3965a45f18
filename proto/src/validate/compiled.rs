//! [`Validator`]: the dictionary's ABNFs compiled once, for validating on the hot path.
//!
//! [`crate::validate::validate`] works straight from the dictionary, which costs, for every
//! AVP, a dictionary hash probe plus a search of the ABNF, and for every container a pass over
//! all its rules (to find the fixed-position head and to check minimum counts). A
//! `Validator` does that work once: each ABNF (every command's request and answer, every
//! grouped AVP, the §7.2 error answer) becomes a plan with a small open-addressing table
//! from (code, vendor) to what the per-AVP checks need.
//!
//! Occurrences and order are tracked in one 64-bit word per container, `seen`: a bit per
//! rule (the first `BITS` rules), `OTHER` once a non-fixed-position AVP has come, and
//! `ALWAYS`, set from the start. Each slot holds the bits that must still be clear when
//! its AVP arrives (`stop`: its own bit for a rule allowed once, every later rule and
//! OTHER for a fixed-position rule, ALWAYS for anything the fast lane does not handle) and
//! the bits its arrival sets (`mark`). A listed AVP that passes therefore costs one probe,
//! one test and one OR, and the end of a container checks every `{ required }` rule with
//! one comparison. The unusual cases (rules with counted bounds such as `2*3`, Grouped
//! AVPs, failures) leave the fast lane for the full path, which gives the exact report.
//!
//! The result is the same as [`crate::validate::validate_with`] for every message (property
//! tests check this, with the built-in dictionary and with hand-made odd ABNFs); only the
//! cost differs. A `Validator` borrows its dictionary, which is immutable while borrowed, so
//! the compiled form cannot go stale. Dictionaries live for the whole process
//! ([`Dictionary::builtin`] is `'static`; one with user files can be leaked once at
//! start-up), so `Validator<'static>` is the usual form.

use rustc_hash::FxHashMap;

use crate::avp::{padded, parse_at, too_deep, AvpFlags, AvpRef, AVP_HEADER_LEN, MAX_DEPTH};
use crate::dict::{AvpDef, CommandDef, Dictionary, Rule, RuleKind, Rules};
use crate::header::HEADER_LEN;
use crate::message::Message;
use crate::validate::reference::{
    error_answer_rules, in_command, is_failed_avp, preflight, Counts, Ctx, Options, Path,
    ProtocolError,
};
use crate::value;
use crate::AvpType;

/// Index of a plan in [`Validator::plans`].
type PlanId = u32;

/// The plan with no ABNF (unknown commands): every AVP is checked on its own.
const NO_RULES: PlanId = 0;

/// `Info::group` for an AVP whose payload is not validated as a group.
const NO_DESCENT: PlanId = PlanId::MAX;

/// Rules 0..BITS have a bit in a container's `seen` word.
const BITS: usize = 62;
/// Set in `seen` from the start: a slot with it in `stop` always takes the full path.
const ALWAYS: u64 = 1 << 62;
/// Set in `seen` once an AVP that is not a fixed-position one has come.
const OTHER: u64 = 1 << 63;
/// The rule bits of `seen`.
const RULE_BITS: u64 = ALWAYS - 1;

/// The key of a free slot. A rule for an AVP with this key (code and vendor both
/// 0xFFFFFFFF) makes its plan [`Plan::generic`]; a received AVP with it finds a free slot,
/// whose `stop` sends it to the full path, which sees the slot is free.
const FREE: u64 = u64::MAX;

/// The part of a table slot the fast lane reads: 32 bytes, so a probe is one cache line.
#[derive(Clone, Copy)]
#[repr(align(32))]
struct Slot {
    /// `(vendor << 32) | code`, or [`FREE`].
    key: u64,
    /// Bits of `seen` that send this AVP to the full path (see the module docs).
    stop: u64,
    /// Bits this AVP sets in `seen`: its rule's bit, plus [`OTHER`] when the rule is not a
    /// fixed-position one.
    mark: u64,
    /// The flag check, as `(flags ^ flip) & care != 0` for a fault: `care` holds the bits
    /// that must be clear (reserved ones, the dictionary's must-not) and those that must be
    /// set (with [`Options::strict_must_bits`]), `flip` the latter.
    flip: u8,
    care: u8,
    /// [`value::check_class`] of the type.
    check: u8,
}

/// The rest of a slot, for the full path.
#[derive(Clone, Copy)]
struct Info<'d> {
    /// `None` in free slots.
    def: Option<&'d AvpDef>,
    /// The plan of the AVP's own ABNF when it is Grouped; [`NO_DESCENT`] when the payload
    /// is not walked (not Grouped, or Failed-AVP).
    group: PlanId,
    rule: usize,
    /// Index of the rule's counter when it has one: a max other than 1 and none, a min
    /// above 1, or an index past [`BITS`].
    counter: Option<usize>,
}

/// One compiled ABNF.
struct Plan<'d> {
    list: &'d [Rule],
    /// The ABNF as the dictionary holds it, for [`Plan::generic`] plans.
    rules: Option<&'d Rules>,
    extensible: bool,
    fixed_head: usize,
    /// Bits of the rules with `min == 1`: all must be set at the end.
    need_bits: u64,
    /// Number of rules with a counter.
    counters: usize,
    /// Whether a rule with a minimum is not covered by `need_bits` (a min above 1, or no
    /// slot at all): then the end of the container always runs the full check.
    check_all: bool,
    /// An ABNF the bit model cannot hold (more fixed-position rules than `seen` has bits, a
    /// rule keyed [`FREE`], an AVP that must and must not have a flag; no real one comes
    /// close): the container is validated by
    /// [`crate::validate`]'s walk instead, which has no such limits.
    generic: bool,
    /// Power-of-two sized, linear probing, at least one free slot (every probe ends); a
    /// single free slot for an ABNF without rules.
    slots: Box<[Slot]>,
    info: Box<[Info<'d>]>,
    mask: usize,
}

impl Slot {
    /// The flag and value checks of `check_known`, as one boolean: false sends the AVP to
    /// the full check, which works out the report.
    #[inline(always)]
    fn passes(&self, flags: u8, data: &[u8]) -> bool {
        (flags ^ self.flip) & self.care == 0 && value::is_valid_class(self.check, data)
    }
}

#[inline(always)]
fn key(code: u32, vendor: u32) -> u64 {
    (u64::from(vendor) << 32) | u64::from(code)
}

/// Fibonacci hashing over the whole key: codes are small consecutive integers and the
/// vendor sits in the high word; the multiply spreads both into the top bits.
#[inline(always)]
fn slot_hash(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl Plan<'_> {
    /// The index of the slot for `key`, when listed (or a free slot for a [`FREE`] key).
    #[inline(always)]
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = slot_hash(key);
        // At most half full (or the single free slot), so a free slot ends every probe;
        // the bound only keeps the loop finite for the optimiser's sake.
        for _ in 0..self.slots.len() {
            i &= self.mask;
            let s = self.slots.get(i)?;
            if s.key == key {
                return Some(i);
            }
            if s.key == FREE {
                return None;
            }
            i += 1;
        }
        None
    }
}

/// A dictionary compiled for validation; see the module docs.
pub struct Validator<'d> {
    ctx: Ctx<'d>,
    plans: Vec<Plan<'d>>,
    /// (command's app_id, code) -> the command and its [request plan, answer plan]. Holding
    /// the command too means a message for a known (application, command) costs one hash
    /// probe here instead of one in the dictionary and one in this map.
    commands: FxHashMap<(u32, u32), (&'d CommandDef, [PlanId; 2])>,
    /// Grouped AVP (code, vendor) -> plan of its ABNF.
    groups: FxHashMap<(u32, u32), PlanId>,
    error_answer: PlanId,
}

impl<'d> Validator<'d> {
    /// Compiles `dict` with default [`Options`].
    pub fn new(dict: &'d Dictionary) -> Validator<'d> {
        Validator::with_options(dict, Options::default())
    }

    /// Compiles `dict`.
    pub fn with_options(dict: &'d Dictionary, opts: Options) -> Validator<'d> {
        let mut v = Validator {
            ctx: Ctx { dict, opts },
            plans: Vec::new(),
            commands: FxHashMap::default(),
            groups: FxHashMap::default(),
            error_answer: NO_RULES,
        };
        let none = v.compile(None);
        v.plans.push(none);
        // Number the grouped AVPs first so slots can point at the plans of nested groups.
        // Only the definition a look-up returns counts (a dictionary may keep superseded ones).
        let grouped: Vec<&'d AvpDef> = dict
            .avps()
            .filter(|d| d.ty == AvpType::Grouped)
            .filter(|d| {
                dict.avp(d.code, d.vendor)
                    .is_some_and(|c| std::ptr::eq(c, *d))
            })
            .collect();
        for (n, def) in grouped.iter().enumerate() {
            v.groups
                .entry((def.code, def.vendor))
                .or_insert((n + 1) as PlanId);
        }
        for def in &grouped {
            let plan = v.compile(Some(&def.group));
            v.plans.push(plan);
        }
        for cmd in dict.commands() {
            if !dict
                .command_exact(cmd.app_id, cmd.code)
                .is_some_and(|c| std::ptr::eq(c, cmd))
            {
                continue;
            }
            let req = v.add(Some(&cmd.request));
            let ans = v.add(Some(&cmd.answer));
            v.commands
                .entry((cmd.app_id, cmd.code))
                .or_insert((cmd, [req, ans]));
        }
        v.error_answer = v.add(Some(error_answer_rules()));
        v
    }

    fn add(&mut self, rules: Option<&'d Rules>) -> PlanId {
        let plan = self.compile(rules);
        self.plans.push(plan);
        (self.plans.len() - 1) as PlanId
    }

    fn compile(&self, rules: Option<&'d Rules>) -> Plan<'d> {
        let rules = rules.filter(|r| !r.rules.is_empty() || r.extensible);
        let list: &'d [Rule] = rules.map_or(&[], |r| &r.rules);
        let fixed_head = list
            .iter()
            .take_while(|r| r.kind == RuleKind::Fixed)
            .count();
        let size = (list.len() * 2).next_power_of_two().max(1);
        let mask = size - 1;
        let free = (
            Slot {
                key: FREE,
                stop: ALWAYS,
                mark: 0,
                flip: 0,
                care: 0,
                check: 0,
            },
            Info {
                def: None,
                group: NO_DESCENT,
                rule: usize::MAX,
                counter: None,
            },
        );
        let mut table = vec![free; size];
        let mut counters = 0usize;
        let mut need_bits = 0u64;
        let mut generic = fixed_head > BITS;
        for (i, r) in list.iter().enumerate() {
            // A rule for an AVP the dictionary lacks stays out of the table: such an AVP is
            // then unknown, as in `validate`, and its rule can never be met.
            let Some(def) = self.ctx.dict.avp(r.code, r.vendor) else {
                continue;
            };
            let k = key(r.code, r.vendor);
            // The one-mask flag check cannot express must and must-not on the same bit
            // (no dictionary file can say that either).
            let masks = self.ctx.masks(def);
            generic |= k == FREE || masks.0 & masks.1 != 0;
            let mut at = slot_hash(k);
            while let Some(entry) = table.get_mut(at & mask) {
                if entry.0.key == FREE {
                    *entry = self.slot(r, i, def, masks, fixed_head, &mut counters);
                    if i < BITS && r.min == 1 {
                        need_bits |= 1 << i;
                    }
                    break;
                }
                // A second rule for the same AVP: the first one wins, as in `validate`.
                if entry.0.key == k {
                    break;
                }
                at += 1;
            }
        }
        let (slots, info) = table.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Plan {
            list,
            rules,
            extensible: rules.is_none_or(|r| r.extensible),
            fixed_head,
            need_bits,
            counters,
            check_all: list
                .iter()
                .enumerate()
                .any(|(i, r)| r.min > 0 && (i >= BITS || need_bits & (1u64 << i) == 0)),
            generic,
            slots: slots.into_boxed_slice(),
            info: info.into_boxed_slice(),
            mask,
        }
    }

    /// The slot of rule `i` (`r`, for the AVP `def` with flag masks `(forbid, need)`) in an
    /// ABNF whose first `fixed_head` rules are fixed-position ones.
    fn slot(
        &self,
        r: &Rule,
        i: usize,
        def: &'d AvpDef,
        (forbid, need): (u8, u8),
        fixed_head: usize,
        counters: &mut usize,
    ) -> (Slot, Info<'d>) {
        let max = r.max.unwrap_or(u32::MAX);
        let bit = if i < BITS { 1u64 << i } else { 0 };
        let counter = (i >= BITS || r.min > 1 || !(max == 1 || max == u32::MAX)).then(|| {
            *counters += 1;
            *counters - 1
        });
        let group = if def.ty != AvpType::Grouped || is_failed_avp(r.code, r.vendor) {
            NO_DESCENT
        } else {
            self.groups
                .get(&(def.code, def.vendor))
                .copied()
                .unwrap_or(NO_RULES)
        };
        let fixed = i < fixed_head;
        let mut stop = if max == 1 { bit } else { 0 };
        if fixed {
            // This rule's bit and every later one, and anything not fixed.
            stop |= (RULE_BITS & !bit.wrapping_sub(1)) | OTHER;
        }
        // Counted rules and Grouped payloads take the full path.
        if counter.is_some() || group != NO_DESCENT {
            stop |= ALWAYS;
        }
        (
            Slot {
                key: key(r.code, r.vendor),
                stop,
                mark: bit | if fixed { 0 } else { OTHER },
                flip: need,
                care: forbid | need,
                check: value::check_class(def.ty),
            },
            Info {
                def: Some(def),
                group,
                rule: i,
                counter,
            },
        )
    }

    /// The dictionary this validator was compiled from.
    pub fn dictionary(&self) -> &'d Dictionary {
        self.ctx.dict
    }

    /// Validates a received request; same result as [`crate::validate::validate_request`].
    pub fn validate_request(&self, msg: &Message) -> Result<(), ProtocolError> {
        self.validate_as(msg, Some(true))
    }

    /// Validates a received answer; same result as [`crate::validate::validate_answer`].
    pub fn validate_answer(&self, msg: &Message) -> Result<(), ProtocolError> {
        self.validate_as(msg, Some(false))
    }

    /// Validates by the R bit; same result as [`crate::validate::validate`].
    pub fn validate(&self, msg: &Message) -> Result<(), ProtocolError> {
        self.validate_as(msg, None)
    }

    /// Like [`crate::validate::validate_with`] with this validator's options.
    pub fn validate_as(&self, msg: &Message, request: Option<bool>) -> Result<(), ProtocolError> {
        let is_request = preflight(msg, request)?;
        let h = &msg.header;
        // An exact (application, command) hit is what `Dictionary::command` would return;
        // otherwise ask the dictionary, which also falls back to the command code alone.
        let (cmd, plans) = match self.commands.get(&(h.app_id, h.code)) {
            Some(&(c, p)) => (Some(c), Some(p)),
            None => {
                let cmd = self.ctx.dict.command(h.app_id, h.code);
                let plans = cmd
                    .and_then(|c| self.commands.get(&(c.app_id, c.code)))
                    .map(|e| e.1);
                (cmd, plans)
            }
        };
        let plan = if !is_request && h.flags.is_error() {
            self.error_answer
        } else {
            plans.map_or(NO_RULES, |p| if is_request { p[0] } else { p[1] })
        };
        self.container(plan, &msg.body, HEADER_LEN, 0, None)
            .map_err(|e| in_command(*e, cmd, is_request))
    }

    /// The fast lane of [`Validator::container`]: walks the AVPs from `pos` while each one
    /// is well formed, listed, passes its flag and value checks and has no `stop` bit set
    /// in `seen`, and returns where it stopped (`buf.len()` at the end) with the updated
    /// `seen`.
    ///
    /// Nothing here reports: the AVP it stops at is handled again by the full path, which
    /// works out the error or does the rest. Keeping the reporting state (offsets, the
    /// path, the view for Failed-AVP) out of this loop is what keeps its few values in
    /// registers, and the listed, passing AVP is most of every message. For the same reason
    /// it reads the header itself instead of calling [`parse_at`] (whose `Result` carries
    /// the error and the raw view): with `parse_at` here the Ro CCR took ~20 ns more.
    #[inline(always)]
    fn skim(plan: &Plan<'_>, buf: &[u8], mut pos: usize, mut seen: u64) -> (usize, u64) {
        while let Some(h) = buf.get(pos..).and_then(|r| r.first_chunk::<12>()) {
            let w = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
            let flags = (w >> 24) as u8;
            let len = (w & 0x00FF_FFFF) as usize;
            let vendor = if flags & AvpFlags::V != 0 {
                u32::from_be_bytes([h[8], h[9], h[10], h[11]])
            } else {
                0
            };
            let hdr = AVP_HEADER_LEN | usize::from((flags & AvpFlags::V) >> 5);
            let Some(data) = buf.get(pos + hdr..pos + len) else {
                break;
            };
            let end = pos + padded(len);
            if end > buf.len() {
                break;
            }
            let Some(s) = plan.find((u64::from(vendor) << 32) | (w >> 32)) else {
                break;
            };
            let Some(s) = plan.slots.get(s) else {
                break;
            };
            if seen & s.stop != 0 || !s.passes(flags, data) {
                break;
            }
            seen |= s.mark;
            pos = end;
        }
        (pos, seen)
    }

    /// The full check of a listed AVP whose fast check failed, for its report; out of line
    /// and cold so the loop in [`Validator::container`] does not carry it.
    #[cold]
    #[inline(never)]
    fn listed_fault(
        &self,
        info: &Info<'d>,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        match info.def {
            Some(def) => self
                .ctx
                .check_known(def.ty, self.ctx.masks(def), def, avp, path),
            None => Ok(()),
        }
    }

    /// 5009 (5008 for a max of 0) for the occurrence of `info`'s AVP past its rule's max.
    #[cold]
    #[inline(never)]
    fn too_many(
        &self,
        plan: &Plan<'d>,
        info: &Info<'d>,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        match (info.def, plan.list.get(info.rule)) {
            (Some(def), Some(rule)) => self.ctx.too_many(def, avp, rule, path),
            // A listed slot always has both; kept total rather than panicking.
            _ => Box::new(ProtocolError::new(
                crate::result_code::DIAMETER_UNABLE_TO_COMPLY,
                None,
                "validator table out of step with its ABNF".to_string(),
            )),
        }
    }

    /// An occurrence of a listed AVP on the full path: counts it when its rule has a
    /// counter, then applies `validate`'s `Tally::hit` checks in the same order (5009 past
    /// the max, then 5008 for a fixed-position AVP out of place).
    fn hit(
        &self,
        plan: &Plan<'d>,
        seen: u64,
        counts: &mut [u16],
        (slot, info): (&Slot, &Info<'d>),
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        let own = slot.mark & RULE_BITS;
        let n = match info.counter {
            Some(c) => match counts.get_mut(c) {
                Some(c) => {
                    *c = c.saturating_add(1);
                    u32::from(*c)
                }
                None => 1,
            },
            None => 1 + u32::from(seen & own != 0),
        };
        if n > plan
            .list
            .get(info.rule)
            .and_then(|r| r.max)
            .unwrap_or(u32::MAX)
        {
            return Err(self.too_many(plan, info, avp, path));
        }
        // A fixed-position rule's `stop` holds its own bit, every later rule's and OTHER:
        // any of them already seen means this one is out of place.
        if info.rule < plan.fixed_head && seen & slot.stop & !ALWAYS != 0 {
            if let Some(def) = info.def {
                return Err(self
                    .ctx
                    .not_allowed(def, avp, "is not at its fixed position", path));
            }
        }
        Ok(())
    }

    /// The first rule, in ABNF order, that occurred fewer times than its min (what
    /// [`crate::validate`] reports as 5005).
    #[cold]
    #[inline(never)]
    fn first_short(&self, plan: &Plan<'d>, seen: u64, counts: &[u16]) -> Option<&'d Rule> {
        plan.list
            .iter()
            .enumerate()
            .find(|&(i, rule)| {
                if rule.min == 0 {
                    return false;
                }
                let n = plan
                    .slots
                    .iter()
                    .zip(plan.info.iter())
                    .find(|(_, info)| info.rule == i)
                    .map_or(0, |(slot, info)| match info.counter {
                        Some(c) => counts.get(c).map_or(0, |&c| u32::from(c)),
                        None => u32::from(seen & slot.mark & RULE_BITS != 0),
                    });
                n < rule.min
            })
            .map(|(_, rule)| rule)
    }

    /// An AVP the plan's table does not list: checked through the dictionary. `Ok(None)`:
    /// an unknown AVP without M, which is ignored; else the plan its payload is validated
    /// with ([`NO_DESCENT`] when it is not).
    #[inline(never)]
    fn unlisted(
        &self,
        plan: &Plan<'d>,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<Option<PlanId>, Box<ProtocolError>> {
        let ctx = &self.ctx;
        let Some(def) = ctx.dict.avp(avp.code, avp.vendor) else {
            if avp.flags.bits() & (AvpFlags::M | AvpFlags::RESERVED) != 0 {
                return Err(ctx.unknown(avp, path));
            }
            return Ok(None);
        };
        ctx.check_known(def.ty, ctx.masks(def), def, avp, path)?;
        if !plan.extensible {
            return Err(ctx.not_allowed(def, avp, "is not allowed here", path));
        }
        if def.ty != AvpType::Grouped || is_failed_avp(def.code, def.vendor) {
            return Ok(Some(NO_DESCENT));
        }
        Ok(Some(
            self.groups
                .get(&(def.code, def.vendor))
                .copied()
                .unwrap_or(NO_RULES),
        ))
    }

    fn container(
        &self,
        plan: PlanId,
        buf: &[u8],
        base: usize,
        depth: usize,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        let ctx = &self.ctx;
        let Some(plan) = self.plans.get(plan as usize) else {
            return Ok(());
        };
        if depth > MAX_DEPTH && !buf.is_empty() {
            return Err(ctx.structural(too_deep(base), path));
        }
        if plan.generic {
            return ctx.container(buf, base, depth, plan.rules, path);
        }
        let mut seen = ALWAYS;
        let mut counts = Counts::new(plan.counters);
        let counts = counts.slice();

        let mut pos = 0;
        loop {
            (pos, seen) = Self::skim(plan, buf, pos, seen);
            if pos >= buf.len() {
                break;
            }
            // The full path for the AVP the fast lane stopped at: the same walk as
            // `AvpRefs::nested(buf, base, depth)`, with every report.
            let p = match parse_at(buf, pos, base) {
                Ok(p) => p,
                Err(e) => return Err(ctx.structural(e, path)),
            };
            let offset = base + pos;
            pos += p.step;
            let view = p.view(offset, depth as u8);
            let listed = plan
                .find(p.key)
                .and_then(|i| Some((plan.slots.get(i)?, plan.info.get(i)?)))
                .filter(|(_, info)| info.def.is_some());
            let group = match listed {
                Some((slot, info)) => {
                    // The same checks as `Ctx::check_known` and `Tally::hit`, in the same
                    // order.
                    if !slot.passes(p.flags, p.data) {
                        self.listed_fault(info, &view, path)?;
                    }
                    // Without a counter or a `stop` bit set (a Grouped AVP, a text value
                    // that is not ASCII) there is nothing for `hit` to find.
                    if info.counter.is_some() || seen & slot.stop & !ALWAYS != 0 {
                        self.hit(plan, seen, counts, (slot, info), &view, path)?;
                    }
                    seen |= slot.mark;
                    info.group
                }
                None => {
                    seen |= OTHER;
                    match self.unlisted(plan, &view, path)? {
                        Some(g) => g,
                        // RFC 6733 §4.1: an unrecognised AVP without M is ignored.
                        None => continue,
                    }
                }
            };

            if group != NO_DESCENT {
                if depth >= MAX_DEPTH {
                    return Err(ctx.too_deep(&view, path));
                }
                let inner = Path {
                    code: view.code,
                    flags: p.flags,
                    vendor: view.vendor,
                    parent: path,
                };
                self.container(
                    group,
                    p.data,
                    offset + (p.raw.len() - p.data.len()),
                    depth + 1,
                    Some(&inner),
                )?;
            }
        }

        if seen & plan.need_bits != plan.need_bits || plan.check_all {
            if let Some(rule) = self.first_short(plan, seen, counts) {
                return Err(ctx.missing(rule, path));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Validator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("plans", &self.plans.len())
            .field("commands", &self.commands.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_across_threads() {
        // The bridge compiles one validator at start-up and uses it from every task.
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Validator<'static>>();
        send_sync::<Message>();
        send_sync::<crate::framer::Framer>();
    }

    #[test]
    fn plans_cover_commands_and_groups() {
        let d = Dictionary::builtin();
        let v = Validator::new(d);
        let grouped = d.avps().filter(|a| a.ty == AvpType::Grouped).count();
        // One empty plan, one per grouped AVP, two per command, one for error answers.
        assert!(v.plans.len() > grouped);
        assert_eq!(v.groups.len() + 1 + 2 * v.commands.len() + 1, v.plans.len());
        // Every slot table is at most half full, so probes always end.
        for p in &v.plans {
            let used = p.slots.iter().filter(|s| s.key != FREE).count();
            assert!(used * 2 <= p.slots.len() || (used == 0 && p.slots.len() == 1));
            assert!(p.slots.len().is_power_of_two());
            assert_eq!(p.slots.len(), p.info.len());
            assert!(!p.generic, "no built-in ABNF needs the generic walk");
        }
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
