//! [`Validator`]: the dictionary's ABNFs compiled once, for validating on the hot path.
//!
//! [`crate::validate::validate`] works straight from the dictionary, which costs, for every
//! AVP, a dictionary hash probe plus a search of the ABNF, and for every container a pass over
//! all its rules (to find the fixed-position head and to check minimum counts). A
//! `Validator` does that work once: each ABNF (every command's request and answer, every
//! grouped AVP, the §7.2 error answer) becomes a plan with a small open-addressing table
//! from (code, vendor) to the rule, the AVP definition and the plan of its own group, plus the
//! list of rules with a minimum. Validating an AVP listed in its container's ABNF is then one
//! probe of a table of a few dozen slots; only AVPs outside the ABNF fall back to the
//! dictionary.
//!
//! The result is the same as [`crate::validate::validate_with`] for every message (a
//! property test checks this); only the cost differs. A `Validator` borrows its dictionary,
//! which is immutable while borrowed, so the compiled form cannot go stale. Dictionaries live
//! for the whole process ([`Dictionary::builtin`] is `'static`; one with user files can be
//! leaked once at start-up), so `Validator<'static>` is the usual form.

use rustc_hash::FxHashMap;

use crate::avp::{parse_at, too_deep, AvpFlags, AvpRef, MAX_DEPTH};
use crate::dict::{AvpDef, CommandDef, Dictionary, Rule, RuleKind, Rules};
use crate::header::HEADER_LEN;
use crate::message::Message;
use crate::validate::{
    error_answer_rules, in_command, is_failed_avp, preflight, Counts, Ctx, Options, Path,
    ProtocolError,
};
use crate::value;
use crate::AvpType;

/// Index of a plan in [`Validator::plans`].
type PlanId = u32;

/// The plan with no ABNF (unknown commands): every AVP is checked on its own.
const NO_RULES: PlanId = 0;

/// One slot of a plan's table. `rule == EMPTY` marks a free slot.
#[derive(Clone, Copy)]
struct Slot<'d> {
    code: u32,
    vendor: u32,
    rule: u16,
    /// The rule's max (`u32::MAX` for none), so counting needs no look at the rule.
    max: u32,
    /// Copied from the definition so the common path never touches its memory (dictionary
    /// definitions are large and scattered: loading one is a cache miss per AVP).
    ty: AvpType,
    forbid: u8,
    need: u8,
    /// The AVP's definition, or `None` when the ABNF names an AVP the dictionary lacks
    /// (then it is treated as unknown, as [`crate::validate`] does).
    def: Option<&'d AvpDef>,
    /// The plan of the AVP's own ABNF when it is Grouped.
    group: PlanId,
}

const EMPTY: u16 = u16::MAX;

/// One compiled ABNF.
struct Plan<'d> {
    list: &'d [Rule],
    extensible: bool,
    fixed_head: usize,
    /// Indexes of the rules with a minimum, for the end-of-container check.
    required: Box<[u16]>,
    /// Power-of-two sized, linear probing; empty for an ABNF without rules.
    slots: Box<[Slot<'d>]>,
    shift: u32,
}

#[inline(always)]
fn slot_hash(code: u32, vendor: u32, shift: u32) -> usize {
    // Fibonacci hashing: codes are small consecutive integers, the multiply spreads them.
    ((code ^ vendor.rotate_left(16)).wrapping_mul(0x9E37_79B9) >> shift) as usize
}

impl<'d> Plan<'d> {
    #[inline(always)]
    fn slot(&self, code: u32, vendor: u32) -> Option<&Slot<'d>> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let start = slot_hash(code, vendor, self.shift);
        // The table is at most half full, so an empty slot ends every probe.
        for i in start..start + self.slots.len() {
            let s = self.slots.get(i & mask)?;
            if s.rule == EMPTY {
                return None;
            }
            if s.code == code && s.vendor == vendor {
                return Some(s);
            }
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
        v.plans.push(Plan {
            list: &[],
            extensible: true,
            fixed_head: 0,
            required: Box::new([]),
            slots: Box::new([]),
            shift: 0,
        });
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
        // Rule indexes are u16 in slots; an ABNF beyond that (none exists) keeps the first
        // 65534 rules in the table and the rest are found through the dictionary as
        // unlisted AVPs.
        let listed = list.len().min(EMPTY as usize - 1);
        let size = if listed == 0 {
            0
        } else {
            (listed * 2).next_power_of_two().max(4)
        };
        let shift = 32 - size.max(2).trailing_zeros();
        let mut slots = vec![
            Slot {
                code: 0,
                vendor: 0,
                rule: EMPTY,
                max: u32::MAX,
                ty: AvpType::OctetString,
                forbid: 0,
                need: 0,
                def: None,
                group: NO_RULES,
            };
            size
        ];
        for (i, r) in list.iter().enumerate().take(listed) {
            let def = self.ctx.dict.avp(r.code, r.vendor);
            let group = def
                .filter(|d| d.ty == AvpType::Grouped)
                .and_then(|d| self.groups.get(&(d.code, d.vendor)).copied())
                .unwrap_or(NO_RULES);
            let mask = size - 1;
            let mut at = slot_hash(r.code, r.vendor, shift);
            while let Some(s) = slots.get_mut(at & mask) {
                if s.rule == EMPTY {
                    let (forbid, need) = def.map_or((0, 0), |d| self.ctx.masks(d));
                    *s = Slot {
                        code: r.code,
                        vendor: r.vendor,
                        rule: i as u16,
                        max: r.max.unwrap_or(u32::MAX),
                        ty: def.map_or(AvpType::OctetString, |d| d.ty),
                        forbid,
                        need,
                        def,
                        group,
                    };
                    break;
                }
                // A second rule for the same AVP: the first one wins, as in `validate`.
                if s.code == r.code && s.vendor == r.vendor {
                    break;
                }
                at += 1;
            }
        }
        Plan {
            list,
            extensible: rules.is_none_or(|r| r.extensible),
            fixed_head: list
                .iter()
                .take_while(|r| r.kind == RuleKind::Fixed)
                .count(),
            required: list
                .iter()
                .enumerate()
                .filter(|(_, r)| r.min > 0)
                .map(|(i, _)| i as u16)
                .collect(),
            slots: slots.into_boxed_slice(),
            shift,
        }
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

    /// The full check of a listed AVP whose fast check failed, for its report; out of line
    /// and cold so the loop in [`Validator::container`] does not carry it.
    #[cold]
    #[inline(never)]
    fn listed_fault(
        &self,
        s: &Slot<'d>,
        def: &'d AvpDef,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        self.ctx
            .check_known(s.ty, (s.forbid, s.need), def, avp, path)
    }

    /// An AVP the plan's table does not settle: not listed in the ABNF, or listed but
    /// missing from the dictionary. Kept out of line so the listed-AVP loop in
    /// [`Validator::container`] keeps its registers. `Ok(None)`: an unknown AVP without M,
    /// which is ignored.
    #[inline(never)]
    fn unlisted(
        &self,
        plan: &Plan<'d>,
        listed: bool,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<Option<(AvpType, PlanId)>, Box<ProtocolError>> {
        let ctx = &self.ctx;
        let def = if listed {
            None
        } else {
            ctx.dict.avp(avp.code, avp.vendor)
        };
        let Some(def) = def else {
            if avp.flags.bits() & (AvpFlags::M | AvpFlags::RESERVED) != 0 {
                return Err(ctx.unknown(avp, path));
            }
            return Ok(None);
        };
        let group = if def.ty == AvpType::Grouped {
            self.groups
                .get(&(def.code, def.vendor))
                .copied()
                .unwrap_or(NO_RULES)
        } else {
            NO_RULES
        };
        ctx.check_known(def.ty, ctx.masks(def), def, avp, path)?;
        if !plan.extensible {
            return Err(ctx.not_allowed(def, avp, "is not allowed here", path));
        }
        Ok(Some((def.ty, group)))
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
        let list = plan.list;
        let mut counts = Counts::new(list.len());
        let counts = counts.slice();
        // Position bookkeeping (what `validate`'s `Tally` holds), kept in locals so they
        // stay in registers.
        let fixed_head = plan.fixed_head;
        let mut last_fixed: Option<usize> = None;
        let mut seen_other = false;

        // The same walk as `AvpRefs::nested(buf, base, depth)`, written out so each header is
        // parsed once and its fields stay in registers: the `AvpRef` view (which error
        // reports need) is only built on the paths that report or that leave the compiled
        // tables, never for a listed AVP that passes.
        if depth > MAX_DEPTH && !buf.is_empty() {
            return Err(ctx.structural(too_deep(base), path));
        }
        let mut pos = 0;
        while pos < buf.len() {
            let p = match parse_at(buf, pos, base) {
                Ok(p) => p,
                Err(e) => return Err(ctx.structural(e, path)),
            };
            let offset = base + pos;
            pos += p.step;
            let view = || AvpRef {
                code: p.code,
                flags: AvpFlags(p.flags),
                vendor: p.vendor,
                data: p.data,
                raw: p.raw,
                offset,
                depth: depth as u8,
            };
            let (ty, group) = match plan.slot(p.code, p.vendor) {
                Some(s @ &Slot { def: Some(def), .. }) => {
                    // Fast path: the same checks as `Ctx::check_known` and `Tally::hit`, in
                    // the same order; a failure re-runs the full check for its report.
                    if (p.flags & s.forbid) | (s.need & !p.flags) != 0
                        || !value::is_valid(s.ty, p.data)
                    {
                        self.listed_fault(s, def, &view(), path)?;
                    }
                    let i = s.rule as usize;
                    if let Some(c) = counts.get_mut(i) {
                        *c = c.saturating_add(1);
                        if u32::from(*c) > s.max {
                            if let Some(rule) = list.get(i) {
                                return Err(ctx.too_many(def, &view(), rule, path));
                            }
                        }
                        if i < fixed_head {
                            if seen_other || last_fixed.is_some_and(|l| l >= i) {
                                return Err(ctx.not_allowed(
                                    def,
                                    &view(),
                                    "is not at its fixed position",
                                    path,
                                ));
                            }
                            last_fixed = Some(i);
                        } else {
                            seen_other = true;
                        }
                    }
                    (s.ty, s.group)
                }
                found => {
                    seen_other = true;
                    match self.unlisted(plan, found.is_some(), &view(), path)? {
                        Some(t) => t,
                        // RFC 6733 §4.1: an unrecognised AVP without M is ignored.
                        None => continue,
                    }
                }
            };

            if ty == AvpType::Grouped && !is_failed_avp(p.code, p.vendor) {
                if depth >= MAX_DEPTH {
                    return Err(ctx.too_deep(&view(), path));
                }
                let inner = Path {
                    code: p.code,
                    flags: p.flags,
                    vendor: p.vendor,
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

        for &i in plan.required.iter() {
            let i = i as usize;
            if let (Some(rule), Some(&n)) = (list.get(i), counts.get(i)) {
                if u32::from(n) < rule.min {
                    return Err(ctx.missing(rule, path));
                }
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
            let used = p.slots.iter().filter(|s| s.rule != EMPTY).count();
            assert!(p.slots.is_empty() || used * 2 <= p.slots.len());
            assert!(p.slots.is_empty() || p.slots.len().is_power_of_two());
        }
    }
}
