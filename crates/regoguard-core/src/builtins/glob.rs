//! `glob.match` and `glob.quote_meta` as OPA answers them: a port of `github.com/gobwas/glob`
//! v0.2.3, the library OPA compiles every pattern with (ARCHITECTURE.md, "Semantics are
//! OPA's"). These replace regorus's own, which translates the pattern for the `globset` crate
//! and so differs from OPA where gobwas's compiler takes shortcuts, e.g. `{**/,}x` with `/`
//! as delimiter matches nothing in OPA (its alternative is measured as one character long).
//!
//! The port is faithful on purpose, quirks included: the lexer, the parser, the compiler's
//! tree minimisation and matcher gluing, and every matcher's `Match`/`Index`/`Len`, working
//! on bytes as Go's strings do (a matcher may cut a subject inside a character, which then
//! decodes as U+FFFD, as in Go). Where gobwas would panic (a slice out of range) the call is
//! an error, so the expression is undefined. gobwas's matching backtracks (`a*a*a*...b` is
//! exponential) and has no bound; here every step counts against the evaluation's time budget
//! ([`tick`]), and a match that spends it fails the evaluation (ARCHITECTURE.md, "Caching
//! rules" 9).

use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, Result};
use regorus::Value;

use super::misc::string;
use super::{tick, Builtin};

const NAME: &str = "glob.match";

/// This family's builtins (they replace regorus's of the same names).
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("glob.match", 3, glob_match),
    Builtin::pure("glob.quote_meta", 1, quote_meta),
];

/// `glob.match(pattern, delimiters, match)`: `delimiters` is an array of one-character
/// strings (`[]` means `["."]`) or `null` (no delimiters), as OPA's `builtinGlobMatch`.
fn glob_match(args: &[Value]) -> Result<Value> {
    let name = "glob.match";
    let pattern = string(name, 1, &args[0])?;
    let delimiters: Vec<char> = match &args[1] {
        Value::Null => Vec::new(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                let Value::String(s) = item else {
                    bail!("{name}: operand 2 must be array of strings");
                };
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => out.push(c),
                    _ => bail!("{name}: operand 2 must be array of single characters"),
                }
            }
            if out.is_empty() {
                out.push('.');
            }
            out
        }
        _ => bail!("{name}: operand 2 must be one of {{array, null}}"),
    };
    let subject = string(name, 3, &args[2])?;
    let matcher = compiled(pattern, delimiters)?;
    Ok(Value::from(matcher.matches(subject.as_bytes())?))
}

/// Patterns compiled on this thread (a policy matches few distinct patterns; OPA caches them
/// too, process-wide). Bounded: cleared when full, and long patterns are not kept.
const CACHE_ENTRIES: usize = 128;
const CACHE_PATTERN_BYTES: usize = 1024;

thread_local! {
    static COMPILED: std::cell::RefCell<HashMap<(String, Vec<char>), Rc<Matcher>>> =
        std::cell::RefCell::new(HashMap::new());
}

fn compiled(pattern: &str, delimiters: Vec<char>) -> Result<Rc<Matcher>> {
    let key = (pattern.to_owned(), delimiters);
    if let Some(m) = COMPILED.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(m);
    }
    let m = Rc::new(compile_pattern(pattern, &key.1)?);
    if pattern.len() > CACHE_PATTERN_BYTES {
        return Ok(m);
    }
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(key, Rc::clone(&m));
    });
    Ok(m)
}

/// `glob.quote_meta(pattern)`: gobwas's `QuoteMeta`, a `\` before each of `*?\[]{}`.
fn quote_meta(args: &[Value]) -> Result<Value> {
    let pattern = string("glob.quote_meta", 1, &args[0])?;
    let mut out = String::with_capacity(pattern.len() * 2);
    for c in pattern.chars() {
        if matches!(c, '*' | '?' | '\\' | '[' | ']' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(Value::from(out))
}

/// Compiles `pattern` with `separators` as gobwas's `glob.Compile` does.
pub(crate) fn compile_pattern(pattern: &str, separators: &[char]) -> Result<Matcher> {
    let tree = parse(pattern)?;
    compile(&tree, separators)
}

// -- Go's strings, on bytes -------------------------------------------------------------------

const RUNE_ERROR: char = '\u{FFFD}';

/// Go's `utf8.DecodeRune`: the first character and its width; `(U+FFFD, 1)` for an invalid
/// byte, `(U+FFFD, 0)` for an empty slice.
fn decode(s: &[u8]) -> (char, usize) {
    let Some(&b) = s.first() else {
        return (RUNE_ERROR, 0);
    };
    let n = match b {
        0x00..=0x7f => return (char::from(b), 1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match s.get(..n).and_then(|head| std::str::from_utf8(head).ok()) {
        Some(text) => (text.chars().next().unwrap_or(RUNE_ERROR), n),
        None => (RUNE_ERROR, 1),
    }
}

/// Go's `for i, r := range s`: each character's byte offset and value.
fn runes(s: &[u8]) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let rest = s.get(i..).filter(|r| !r.is_empty())?;
        let (r, w) = decode(rest);
        let at = i;
        i += w;
        Some((at, r))
    })
}

fn rune_count(s: &[u8]) -> usize {
    runes(s).count()
}

/// Go's `utf8.RuneLen` of a decoded character (3 for U+FFFD, whatever width it was read at).
fn rune_len(r: char) -> usize {
    r.len_utf8()
}

/// Go's `strings.Index`.
fn index(s: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    s.windows(needle.len()).position(|w| w == needle)
}

/// Go's `strings.LastIndex`.
fn last_index(s: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(s.len());
    }
    s.windows(needle.len()).rposition(|w| w == needle)
}

/// Go's `strings.IndexRune`.
fn index_rune(s: &[u8], r: char) -> Option<usize> {
    if r == RUNE_ERROR {
        return runes(s).find(|&(_, c)| c == RUNE_ERROR).map(|(i, _)| i);
    }
    let mut buf = [0u8; 4];
    index(s, r.encode_utf8(&mut buf).as_bytes())
}

/// gobwas's `IndexAnyRunes`: the first occurrence of the *first separator that occurs*
/// (separator order, not position order).
fn index_any_runes(s: &[u8], rs: &[char]) -> Option<usize> {
    rs.iter().find_map(|&r| index_rune(s, r))
}

/// gobwas's `LastIndexAnyRunes`, with its loop for non-ASCII separators (which searches the
/// whole string each time and so can slice out of range: a panic in Go, an error here).
fn last_index_any_runes(s: &[u8], rs: &[char]) -> Result<Option<usize>> {
    for &r in rs {
        let found = if r.is_ascii() {
            s.iter().rposition(|&b| u32::from(b) == u32::from(r))
        } else {
            let mut found = None;
            let mut sub = s;
            while !sub.is_empty() {
                let Some(j) = index_rune(s, r) else { break };
                found = Some(j);
                sub = sub.get(j + 1..).ok_or_else(out_of_range)?;
            }
            found
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn out_of_range() -> anyhow::Error {
    anyhow!("glob.match: slice bounds out of range (gobwas/glob panics here)")
}

// -- lexer ------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Eof,
    Error,
    Text,
    Any,
    Super,
    Single,
    Not,
    Separator,
    RangeOpen,
    RangeClose,
    RangeLo,
    RangeHi,
    RangeBetween,
    TermsOpen,
    TermsClose,
}

/// gobwas's end of input: the NUL character reads as the end, as in Go.
const EOF: char = '\0';

struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    err: Option<String>,
    tokens: std::collections::VecDeque<(Tok, String)>,
    terms_level: i64,
    last_rune: char,
    last_rune_size: usize,
    has_rune: bool,
}

const IN_TEXT_BREAKERS: &[char] = &['?', '*', '[', '{'];
const IN_TERMS_BREAKERS: &[char] = &['?', '*', '[', '{', '}', ','];

impl<'a> Lexer<'a> {
    fn new(source: &'a str) -> Self {
        Lexer {
            data: source.as_bytes(),
            pos: 0,
            err: None,
            tokens: std::collections::VecDeque::new(),
            terms_level: 0,
            last_rune: EOF,
            last_rune_size: 0,
            has_rune: false,
        }
    }

    fn next(&mut self) -> (Tok, String) {
        loop {
            if let Some(e) = &self.err {
                return (Tok::Error, e.clone());
            }
            if let Some(t) = self.tokens.pop_front() {
                return t;
            }
            self.fetch_item();
        }
    }

    fn peek(&mut self) -> (char, usize) {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return (EOF, 0);
        }
        let (r, w) = decode(rest);
        if r == RUNE_ERROR {
            self.err = Some("could not read rune".to_owned());
            return (EOF, 0);
        }
        (r, w)
    }

    fn read(&mut self) -> char {
        if self.has_rune {
            self.has_rune = false;
            self.pos += self.last_rune_size;
            return self.last_rune;
        }
        let (r, s) = self.peek();
        self.pos += s;
        self.last_rune = r;
        self.last_rune_size = s;
        r
    }

    fn unread(&mut self) {
        if self.has_rune {
            self.err = Some("could not unread rune".to_owned());
            return;
        }
        self.pos = self.pos.saturating_sub(self.last_rune_size);
        self.has_rune = true;
    }

    fn push(&mut self, t: Tok, raw: impl Into<String>) {
        self.tokens.push_back((t, raw.into()));
    }

    fn fetch_item(&mut self) {
        let r = self.read();
        let in_terms = self.terms_level > 0;
        match r {
            EOF => self.push(Tok::Eof, ""),
            '{' => {
                self.terms_level += 1;
                self.push(Tok::TermsOpen, "{");
            }
            ',' if in_terms => self.push(Tok::Separator, ","),
            '}' if in_terms => {
                self.push(Tok::TermsClose, "}");
                self.terms_level -= 1;
            }
            '[' => {
                self.push(Tok::RangeOpen, "[");
                self.fetch_range();
            }
            '?' => self.push(Tok::Single, "?"),
            '*' => {
                if self.read() == '*' {
                    self.push(Tok::Super, "**");
                } else {
                    self.unread();
                    self.push(Tok::Any, "*");
                }
            }
            _ => {
                self.unread();
                let breakers = if in_terms {
                    IN_TERMS_BREAKERS
                } else {
                    IN_TEXT_BREAKERS
                };
                self.fetch_text(breakers);
            }
        }
    }

    fn fetch_range(&mut self) {
        let mut want_hi = false;
        let mut want_close = false;
        let mut seen_not = false;
        loop {
            let r = self.read();
            if r == EOF {
                self.err = Some("unexpected end of input".to_owned());
                return;
            }
            if want_close {
                if r == ']' {
                    self.push(Tok::RangeClose, "]");
                } else {
                    self.err = Some("expected close range character".to_owned());
                }
                return;
            }
            if want_hi {
                self.push(Tok::RangeHi, r);
                want_close = true;
                continue;
            }
            if !seen_not && r == '!' {
                self.push(Tok::Not, "!");
                seen_not = true;
                continue;
            }
            let (n, w) = self.peek();
            if n == '-' {
                self.pos += w;
                self.push(Tok::RangeLo, r);
                self.push(Tok::RangeBetween, "-");
                want_hi = true;
                continue;
            }
            self.unread();
            self.fetch_text(&[']']);
            want_close = true;
        }
    }

    fn fetch_text(&mut self, breakers: &[char]) {
        let mut data = String::new();
        let mut escaped = false;
        loop {
            let r = self.read();
            if r == EOF {
                break;
            }
            if !escaped {
                if r == '\\' {
                    escaped = true;
                    continue;
                }
                if breakers.contains(&r) {
                    self.unread();
                    break;
                }
            }
            escaped = false;
            data.push(r);
        }
        if !data.is_empty() {
            self.push(Tok::Text, data);
        }
    }
}

// -- parser -----------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Nothing,
    Pattern,
    List { not: bool, chars: String },
    Range { not: bool, lo: char, hi: char },
    Text(String),
    Any,
    Super,
    Single,
    AnyOf,
}

/// An AST node; equality is gobwas's `Node.Equal` (kind, value, children).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: Kind,
    children: Vec<Node>,
}

impl Node {
    fn new(kind: Kind, children: Vec<Node>) -> Self {
        Node { kind, children }
    }
}

/// gobwas's `ast.Parse`, on an arena (the Go parser walks parent pointers).
fn parse(pattern: &str) -> Result<Node> {
    struct Slot {
        kind: Kind,
        parent: Option<usize>,
        children: Vec<usize>,
    }
    fn insert(arena: &mut Vec<Slot>, parent: usize, kind: Kind) -> usize {
        let id = arena.len();
        arena.push(Slot {
            kind,
            parent: Some(parent),
            children: Vec::new(),
        });
        if let Some(p) = arena.get_mut(parent) {
            p.children.push(id);
        }
        id
    }
    fn build(arena: &[Slot], id: usize) -> Node {
        let slot = arena.get(id);
        Node::new(
            slot.map_or(Kind::Nothing, |s| s.kind.clone()),
            slot.map(|s| s.children.iter().map(|&c| build(arena, c)).collect())
                .unwrap_or_default(),
        )
    }
    let parent_of = |arena: &[Slot], id: usize| {
        arena
            .get(id)
            .and_then(|s| s.parent)
            .ok_or_else(|| anyhow!("glob: unbalanced alternatives"))
    };

    let mut lexer = Lexer::new(pattern);
    let mut arena = vec![Slot {
        kind: Kind::Pattern,
        parent: None,
        children: Vec::new(),
    }];
    let mut tree = 0usize;
    loop {
        let (tok, raw) = lexer.next();
        match tok {
            Tok::Eof => break,
            Tok::Error => bail!("glob.match: {raw}"),
            Tok::Text => {
                insert(&mut arena, tree, Kind::Text(raw));
            }
            Tok::Any => {
                insert(&mut arena, tree, Kind::Any);
            }
            Tok::Super => {
                insert(&mut arena, tree, Kind::Super);
            }
            Tok::Single => {
                insert(&mut arena, tree, Kind::Single);
            }
            Tok::RangeOpen => {
                let kind = parse_range(&mut lexer)?;
                insert(&mut arena, tree, kind);
            }
            Tok::TermsOpen => {
                let any_of = insert(&mut arena, tree, Kind::AnyOf);
                tree = insert(&mut arena, any_of, Kind::Pattern);
            }
            Tok::Separator => {
                let any_of = parent_of(&arena, tree)?;
                tree = insert(&mut arena, any_of, Kind::Pattern);
            }
            Tok::TermsClose => {
                let any_of = parent_of(&arena, tree)?;
                tree = parent_of(&arena, any_of)?;
            }
            other => bail!("glob.match: unexpected token: {other:?}<{raw:?}>"),
        }
    }
    Ok(build(&arena, 0))
}

/// gobwas's `parserRange`, after a `[`.
fn parse_range(lexer: &mut Lexer<'_>) -> Result<Kind> {
    let mut not = false;
    let mut lo = EOF;
    let mut hi = EOF;
    let mut chars = String::new();
    loop {
        let (tok, raw) = lexer.next();
        match tok {
            Tok::Eof => bail!("glob.match: unexpected end"),
            Tok::Error => bail!("glob.match: {raw}"),
            Tok::Not => not = true,
            Tok::RangeLo => lo = raw.chars().next().unwrap_or(EOF),
            Tok::RangeHi => {
                hi = raw.chars().next().unwrap_or(EOF);
                if hi < lo {
                    bail!("glob.match: hi character '{hi}' should be greater than lo '{lo}'");
                }
            }
            Tok::Text => chars = raw,
            Tok::RangeClose => {
                let is_range = lo != EOF && hi != EOF;
                let is_chars = !chars.is_empty();
                if is_chars == is_range {
                    bail!("glob.match: could not parse range");
                }
                return Ok(if is_range {
                    Kind::Range { not, lo, hi }
                } else {
                    Kind::List { not, chars }
                });
            }
            _ => {}
        }
    }
}

// -- matchers ---------------------------------------------------------------------------------

/// gobwas's `match.Matcher` implementations. Lengths are in characters (`-1`: not fixed).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Matcher {
    Nothing,
    Super,
    Any(Vec<char>),
    Single(Vec<char>),
    List {
        list: Vec<char>,
        not: bool,
    },
    Range {
        lo: char,
        hi: char,
        not: bool,
    },
    Text(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    PrefixSuffix(Vec<u8>, Vec<u8>),
    PrefixAny(Vec<u8>, Vec<char>),
    SuffixAny(Vec<u8>, Vec<char>),
    Contains {
        needle: Vec<u8>,
        not: bool,
    },
    Min(usize),
    Max(usize),
    Row {
        matchers: Vec<Matcher>,
        runes: usize,
    },
    AnyOf(Vec<Matcher>),
    EveryOf(Vec<Matcher>),
    BTree(Box<BTree>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BTree {
    value: Matcher,
    left: Option<Matcher>,
    right: Option<Matcher>,
    left_len: isize,
    right_len: isize,
    len: isize,
}

fn new_btree(value: Matcher, left: Option<Matcher>, right: Option<Matcher>) -> Matcher {
    let value_len = value.len();
    let left_len = left.as_ref().map_or(0, Matcher::len);
    let right_len = right.as_ref().map_or(0, Matcher::len);
    let len = if value_len == -1 || left_len == -1 || right_len == -1 {
        -1
    } else {
        left_len + value_len + right_len
    };
    Matcher::BTree(Box::new(BTree {
        value,
        left,
        right,
        left_len,
        right_len,
        len,
    }))
}

fn text(s: &str) -> Matcher {
    Matcher::Text(s.as_bytes().to_vec())
}

fn isize_of(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// The segments of `[n] ++ [n + i + RuneLen(r) for each character of sub]`.
fn tail_segments(n: usize, sub: &[u8]) -> Vec<usize> {
    let mut seg = Vec::with_capacity(sub.len() + 1);
    seg.push(n);
    seg.extend(runes(sub).map(|(i, r)| n + i + rune_len(r)));
    seg
}

/// Each character's offset, then the length (`Super.Index`, `Any.Index`).
fn all_segments(s: &[u8]) -> Vec<usize> {
    let mut seg: Vec<usize> = runes(s).map(|(i, _)| i).collect();
    seg.push(s.len());
    seg
}

/// gobwas's `appendMerge` of two sorted segment lists.
fn append_merge(target: &[usize], sub: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(target.len() + sub.len());
    let (mut x, mut y) = (0, 0);
    loop {
        match (target.get(x), sub.get(y)) {
            (None, None) => break,
            (None, Some(_)) => {
                out.extend_from_slice(sub.get(y..).unwrap_or_default());
                break;
            }
            (Some(_), None) => {
                out.extend_from_slice(target.get(x..).unwrap_or_default());
                break;
            }
            (Some(&a), Some(&b)) => match a.cmp(&b) {
                std::cmp::Ordering::Equal => {
                    out.push(a);
                    x += 1;
                    y += 1;
                }
                std::cmp::Ordering::Less => {
                    out.push(a);
                    x += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b);
                    y += 1;
                }
            },
        }
    }
    out
}

/// One character in `s` and nothing else, with Go's decoding (an empty `s` reads as U+FFFD).
fn single_rune(s: &[u8]) -> Option<char> {
    let (r, w) = decode(s);
    (s.len() <= w).then_some(r)
}

type Found = Option<(usize, Vec<usize>)>;

impl Matcher {
    pub(crate) fn len(&self) -> isize {
        match self {
            Matcher::Nothing => 0,
            Matcher::Single(_) | Matcher::List { .. } | Matcher::Range { .. } => 1,
            Matcher::Text(t) => isize_of(rune_count(t)),
            Matcher::Row { runes, .. } => isize_of(*runes),
            Matcher::AnyOf(ms) => {
                // gobwas's loop: while `l` is still -1 it takes the next length, so a
                // variable-length first alternative is forgotten.
                let mut l = -1;
                for m in ms {
                    let ml = m.len();
                    if l == -1 {
                        l = ml;
                    } else if ml == -1 || l != ml {
                        return -1;
                    }
                }
                l
            }
            // gobwas's loop starts at 0 and only adds while positive: -1 unless empty.
            Matcher::EveryOf(ms) if ms.is_empty() => 0,
            Matcher::BTree(t) => t.len,
            _ => -1,
        }
    }

    pub(crate) fn matches(&self, s: &[u8]) -> Result<bool> {
        tick(NAME)?;
        Ok(match self {
            Matcher::Nothing => s.is_empty(),
            Matcher::Super => true,
            Matcher::Any(seps) => index_any_runes(s, seps).is_none(),
            Matcher::Single(seps) => single_rune(s).is_some_and(|r| !seps.contains(&r)),
            Matcher::List { list, not } => {
                single_rune(s).is_some_and(|r| list.contains(&r) != *not)
            }
            Matcher::Range { lo, hi, not } => {
                single_rune(s).is_some_and(|r| (*lo <= r && r <= *hi) != *not)
            }
            Matcher::Text(t) => s == t.as_slice(),
            Matcher::Prefix(p) => s.starts_with(p),
            Matcher::Suffix(x) => s.ends_with(x),
            Matcher::PrefixSuffix(p, x) => s.starts_with(p) && s.ends_with(x),
            Matcher::PrefixAny(p, seps) => s
                .strip_prefix(p.as_slice())
                .is_some_and(|rest| index_any_runes(rest, seps).is_none()),
            Matcher::SuffixAny(x, seps) => s
                .strip_suffix(x.as_slice())
                .is_some_and(|rest| index_any_runes(rest, seps).is_none()),
            Matcher::Contains { needle, not } => index(s, needle).is_some() != *not,
            Matcher::Min(limit) => {
                let mut l = 0;
                runes(s).any(|_| {
                    l += 1;
                    l >= *limit
                })
            }
            Matcher::Max(limit) => rune_count(s) <= *limit,
            Matcher::Row { matchers, runes } => {
                rune_count(s) == *runes && row_match_all(matchers, s)?
            }
            Matcher::AnyOf(ms) => {
                for m in ms {
                    if m.matches(s)? {
                        return Ok(true);
                    }
                }
                false
            }
            Matcher::EveryOf(ms) => {
                for m in ms {
                    if !m.matches(s)? {
                        return Ok(false);
                    }
                }
                true
            }
            Matcher::BTree(t) => t.matches(s)?,
        })
    }

    fn index(&self, s: &[u8]) -> Result<Found> {
        tick(NAME)?;
        Ok(match self {
            Matcher::Nothing => Some((0, vec![0])),
            Matcher::Super => Some((0, all_segments(s))),
            Matcher::Any(seps) => match index_any_runes(s, seps) {
                Some(0) => Some((0, vec![0])),
                Some(found) => Some((0, all_segments(s.get(..found).unwrap_or_default()))),
                None => Some((0, all_segments(s))),
            },
            Matcher::Single(seps) => runes(s)
                .find(|(_, r)| !seps.contains(r))
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Matcher::List { list, not } => runes(s)
                .find(|(_, r)| list.contains(r) != *not)
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Matcher::Range { lo, hi, not } => runes(s)
                .find(|(_, r)| (*lo <= *r && *r <= *hi) != *not)
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Matcher::Text(t) => index(s, t).map(|i| (i, vec![t.len()])),
            Matcher::Prefix(p) => index(s, p).map(|idx| {
                let sub = s.get(idx + p.len()..).unwrap_or_default();
                (idx, tail_segments(p.len(), sub))
            }),
            Matcher::PrefixAny(p, seps) => index(s, p).map(|idx| {
                let mut sub = s.get(idx + p.len()..).unwrap_or_default();
                if let Some(i) = index_any_runes(sub, seps) {
                    sub = sub.get(..i).unwrap_or_default();
                }
                (idx, tail_segments(p.len(), sub))
            }),
            Matcher::Suffix(x) => index(s, x).map(|idx| (0, vec![idx + x.len()])),
            Matcher::SuffixAny(x, seps) => match index(s, x) {
                None => None,
                Some(idx) => {
                    let head = s.get(..idx).unwrap_or_default();
                    let i = last_index_any_runes(head, seps)?.map_or(0, |j| j + 1);
                    let seg = (idx + x.len()).checked_sub(i).ok_or_else(out_of_range)?;
                    Some((i, vec![seg]))
                }
            },
            Matcher::PrefixSuffix(p, x) => match index(s, p) {
                None => None,
                Some(prefix_idx) if x.is_empty() => Some((prefix_idx, vec![s.len() - prefix_idx])),
                Some(prefix_idx) => {
                    let mut segments = Vec::new();
                    let mut sub = s.get(prefix_idx..).unwrap_or_default();
                    while let Some(suffix_idx) = last_index(sub, x) {
                        segments.push(suffix_idx + x.len());
                        sub = sub.get(..suffix_idx).unwrap_or_default();
                    }
                    segments.reverse();
                    (!segments.is_empty()).then_some((prefix_idx, segments))
                }
            },
            Matcher::Contains { needle, not } => {
                let idx = index(s, needle);
                let mut offset = 0;
                let mut sub = s;
                if *not {
                    if let Some(i) = idx {
                        sub = s.get(..i).unwrap_or_default();
                    }
                } else {
                    let Some(i) = idx else { return Ok(None) };
                    offset = i + needle.len();
                    if s.len() <= offset {
                        return Ok(Some((0, vec![offset])));
                    }
                    sub = s.get(offset..).unwrap_or_default();
                }
                let mut seg: Vec<usize> = runes(sub).map(|(i, _)| offset + i).collect();
                seg.push(offset + sub.len());
                Some((0, seg))
            }
            Matcher::Min(limit) => {
                if s.len() < *limit {
                    return Ok(None);
                }
                let mut count = 0;
                let mut seg = Vec::new();
                for (i, r) in runes(s) {
                    count += 1;
                    if count >= *limit {
                        seg.push(i + rune_len(r));
                    }
                }
                (!seg.is_empty()).then_some((0, seg))
            }
            Matcher::Max(limit) => {
                let mut seg = vec![0];
                let mut count = 0;
                for (i, r) in runes(s) {
                    count += 1;
                    if count > *limit {
                        break;
                    }
                    seg.push(i + rune_len(r));
                }
                Some((0, seg))
            }
            Matcher::Row { matchers, runes: n } => {
                for (i, _) in runes(s) {
                    let rest = s.get(i..).unwrap_or_default();
                    if rest.len() < *n {
                        break;
                    }
                    if row_match_all(matchers, rest)? {
                        return Ok(Some((i, vec![*n])));
                    }
                }
                None
            }
            Matcher::AnyOf(ms) => {
                let mut best: Found = None;
                for m in ms {
                    let Some((idx, seg)) = m.index(s)? else {
                        continue;
                    };
                    best = match best {
                        Some((index, _)) if idx > index => best,
                        Some((index, segments)) if idx == index => {
                            Some((index, append_merge(&segments, &seg)))
                        }
                        _ => Some((idx, seg)),
                    };
                }
                best
            }
            Matcher::EveryOf(ms) => {
                let mut index = 0usize;
                let mut current: Vec<usize> = Vec::new();
                for (i, m) in ms.iter().enumerate() {
                    let sub = s.get(index..).unwrap_or_default();
                    let Some((idx, seg)) = m.index(sub)? else {
                        return Ok(None);
                    };
                    if i == 0 {
                        current = seg;
                    } else {
                        // gobwas: keep the ends both agree on (`ex + delta == n`, delta = -idx).
                        let next: Vec<usize> = current
                            .iter()
                            .flat_map(|&ex| seg.iter().filter(move |&&n| ex == n + idx).copied())
                            .collect();
                        if next.is_empty() {
                            return Ok(None);
                        }
                        current = next;
                    }
                    index += idx;
                }
                Some((index, current))
            }
            // gobwas's BTree.Index is a stub: it never finds anything.
            Matcher::BTree(_) => None,
        })
    }
}

/// gobwas's `Row.matchAll`: each matcher takes its length in characters, sliced as Go does
/// (`s[idx : idx+next+1]`, one byte past the last character's start).
fn row_match_all(matchers: &[Matcher], s: &[u8]) -> Result<bool> {
    let mut idx = 0usize;
    for m in matchers {
        let length = m.len();
        let rest = s.get(idx..).ok_or_else(out_of_range)?;
        let mut next = 0usize;
        let mut i: isize = 0;
        for (at, _) in runes(rest) {
            next = at;
            i += 1;
            if i == length {
                break;
            }
        }
        if i < length {
            return Ok(false);
        }
        let piece = s.get(idx..idx + next + 1).ok_or_else(out_of_range)?;
        if !m.matches(piece)? {
            return Ok(false);
        }
        idx += next + 1;
    }
    Ok(true)
}

impl BTree {
    fn matches(&self, s: &[u8]) -> Result<bool> {
        let input_len = isize_of(s.len());
        let (mut offset, limit) = if self.len != -1 && self.len > input_len {
            (0, 0)
        } else {
            (
                self.left_len.max(0),
                if self.right_len >= 0 {
                    input_len - self.right_len
                } else {
                    input_len
                },
            )
        };
        while offset < limit {
            tick(NAME)?;
            let (start, end) = (offset.unsigned_abs(), limit.unsigned_abs());
            let window = s.get(start..end).ok_or_else(out_of_range)?;
            let Some((index, segments)) = self.value.index(window)? else {
                return Ok(false);
            };
            let at = start + index;
            let head = s.get(..at).ok_or_else(out_of_range)?;
            let left = match &self.left {
                Some(m) => m.matches(head)?,
                None => head.is_empty(),
            };
            if left {
                for &length in segments.iter().rev() {
                    let r = s.get(at + length..).unwrap_or_default();
                    let right = match &self.right {
                        Some(m) => m.matches(r)?,
                        None => r.is_empty(),
                    };
                    if right {
                        return Ok(true);
                    }
                }
            }
            let (_, step) = decode(s.get(at..).unwrap_or_default());
            if index + step == 0 {
                // Unreachable with gobwas's matchers (an index inside a non-empty window);
                // Go would loop forever here.
                bail!("glob.match: the matcher made no progress");
            }
            offset += isize_of(index + step);
        }
        Ok(false)
    }
}

// -- compiler ---------------------------------------------------------------------------------

fn optimize(m: Matcher) -> Matcher {
    match m {
        Matcher::Any(seps) if seps.is_empty() => Matcher::Super,
        Matcher::AnyOf(mut ms) if ms.len() == 1 => ms.pop().unwrap_or(Matcher::Nothing),
        Matcher::List { list, not: false } if list.len() == 1 => {
            Matcher::Text(list.iter().collect::<String>().into_bytes())
        }
        Matcher::BTree(t) => optimize_btree(*t),
        other => other,
    }
}

fn optimize_btree(mut t: BTree) -> Matcher {
    t.left = t.left.map(optimize);
    t.right = t.right.map(optimize);
    let Matcher::Text(r) = &t.value else {
        return Matcher::BTree(Box::new(t));
    };
    let r = r.clone();
    match (&t.left, &t.right) {
        (None, None) => Matcher::Text(r),
        (Some(Matcher::Super), Some(Matcher::Super)) => Matcher::Contains {
            needle: r,
            not: false,
        },
        (Some(Matcher::Super), None) => Matcher::Suffix(r),
        (None, Some(Matcher::Super)) => Matcher::Prefix(r),
        (None, Some(Matcher::Suffix(x))) => Matcher::PrefixSuffix(r, x.clone()),
        (Some(Matcher::Prefix(p)), None) => Matcher::PrefixSuffix(p.clone(), r),
        (Some(Matcher::Any(seps)), None) => Matcher::SuffixAny(r, seps.clone()),
        (None, Some(Matcher::Any(seps))) => Matcher::PrefixAny(r, seps.clone()),
        _ => Matcher::BTree(Box::new(t)),
    }
}

fn compile_matchers(mut matchers: Vec<Matcher>) -> Result<Matcher> {
    if matchers.is_empty() {
        bail!("glob.match: compile error: need at least one matcher");
    }
    if matchers.len() == 1 {
        return Ok(matchers.swap_remove(0));
    }
    if let Some(m) = glue(&matchers) {
        return Ok(m);
    }
    let mut idx = None;
    let mut max_len = -1;
    for (i, m) in matchers.iter().enumerate() {
        let l = m.len();
        if l != -1 && l >= max_len {
            max_len = l;
            idx = Some(i);
        }
    }
    let Some(idx) = idx else {
        let rest = matchers.split_off(1);
        let r = compile_matchers(rest)?;
        let first = matchers.swap_remove(0);
        return Ok(new_btree(first, None, Some(r)));
    };
    let right: Vec<Matcher> = matchers.split_off(idx + 1);
    let value = matchers.pop().unwrap_or(Matcher::Nothing);
    let left = matchers;
    let l = if left.is_empty() {
        None
    } else {
        Some(compile_matchers(left)?)
    };
    let r = if right.is_empty() {
        None
    } else {
        Some(compile_matchers(right)?)
    };
    Ok(new_btree(value, l, r))
}

fn glue(matchers: &[Matcher]) -> Option<Matcher> {
    glue_as_every(matchers).or_else(|| glue_as_row(matchers))
}

fn glue_as_row(matchers: &[Matcher]) -> Option<Matcher> {
    if matchers.len() <= 1 {
        return None;
    }
    let mut total = 0usize;
    for m in matchers {
        total += usize::try_from(m.len()).ok()?;
    }
    Some(Matcher::Row {
        matchers: matchers.to_vec(),
        runes: total,
    })
}

fn glue_as_every(matchers: &[Matcher]) -> Option<Matcher> {
    if matchers.len() <= 1 {
        return None;
    }
    let (mut has_any, mut has_super, mut has_single) = (false, false, false);
    let mut min = 0usize;
    let mut separator: Option<&[char]> = None;
    for m in matchers {
        let sep: &[char] = match m {
            Matcher::Super => {
                has_super = true;
                &[]
            }
            Matcher::Any(seps) => {
                has_any = true;
                seps
            }
            Matcher::Single(seps) => {
                has_single = true;
                min += 1;
                seps
            }
            Matcher::List { list, not: true } => {
                has_single = true;
                min += 1;
                list
            }
            _ => return None,
        };
        match separator {
            None => separator = Some(sep),
            Some(s) if s == sep => {}
            Some(_) => return None,
        }
    }
    let separator = separator.unwrap_or_default();
    if has_super && !has_any && !has_single {
        return Some(Matcher::Super);
    }
    if has_any && !has_super && !has_single {
        return Some(Matcher::Any(separator.to_vec()));
    }
    if (has_any || has_super) && min > 0 && separator.is_empty() {
        return Some(Matcher::Min(min));
    }
    let mut every = Vec::new();
    if min > 0 {
        every.push(Matcher::Min(min));
        if !has_any && !has_super {
            every.push(Matcher::Max(min));
        }
    }
    if !separator.is_empty() {
        every.push(Matcher::Contains {
            needle: separator.iter().collect::<String>().into_bytes(),
            not: true,
        });
    }
    Some(Matcher::EveryOf(every))
}

fn minimize_matchers(matchers: Vec<Matcher>) -> Result<Vec<Matcher>> {
    let mut done: Option<Matcher> = None;
    let (mut left, mut right, mut count) = (0, 0, 0);
    let n = matchers.len();
    for l in 0..n {
        for r in (l + 1..=n).rev() {
            tick(NAME)?;
            let Some(glued) = matchers.get(l..r).and_then(glue) else {
                continue;
            };
            let swap = match &done {
                None => true,
                Some(d) => {
                    let (cl, gl) = (d.len(), glued.len());
                    (cl > -1 && gl > -1 && gl > cl) || count < r - l
                }
            };
            if swap {
                done = Some(glued);
                left = l;
                right = r;
                count = r - l;
            }
        }
    }
    let Some(done) = done else {
        return Ok(matchers);
    };
    let mut next: Vec<Matcher> = matchers.get(..left).unwrap_or_default().to_vec();
    next.push(done);
    next.extend_from_slice(matchers.get(right..).unwrap_or_default());
    if next.len() == n {
        return Ok(next);
    }
    minimize_matchers(next)
}

/// gobwas's `minimizeTreeAnyOf`: alternatives' common leading and trailing nodes taken out.
fn minimize_any_of(tree: &Node) -> Option<Node> {
    if !tree.children.iter().all(|c| c.kind == Kind::Pattern) {
        return None;
    }
    let (common_left, common_right) = common_children(&tree.children);
    let (cl, cr) = (common_left.len(), common_right.len());
    if cl == 0 && cr == 0 {
        return None;
    }
    let mut result = Vec::new();
    if cl > 0 {
        result.push(Node::new(Kind::Pattern, common_left));
    }
    let mut any_of: Vec<Node> = Vec::new();
    for child in &tree.children {
        let reuse = child
            .children
            .get(cl..child.children.len().saturating_sub(cr))
            .unwrap_or_default();
        let node = if reuse.is_empty() {
            Node::new(Kind::Nothing, Vec::new())
        } else {
            Node::new(Kind::Pattern, reuse.to_vec())
        };
        if !any_of.contains(&node) {
            any_of.push(node);
        }
    }
    if any_of.len() == 1 && any_of.first().is_some_and(|n| n.kind != Kind::Nothing) {
        result.extend(any_of);
    } else if any_of.len() > 1 {
        result.push(Node::new(Kind::AnyOf, any_of));
    }
    if cr > 0 {
        result.push(Node::new(Kind::Pattern, common_right));
    }
    Some(Node::new(Kind::Pattern, result))
}

/// gobwas's `commonChildren`, its loop kept as written.
fn common_children(nodes: &[Node]) -> (Vec<Node>, Vec<Node>) {
    let mut common_left = Vec::new();
    if nodes.len() <= 1 {
        return (common_left, Vec::new());
    }
    // The node with the fewest children (the first of them).
    let mut idx = 0;
    for (i, n) in nodes.iter().enumerate() {
        if n.children.len() < nodes.get(idx).map_or(0, |m| m.children.len()) {
            idx = i;
        }
    }
    let Some(tree) = nodes.get(idx) else {
        return (common_left, Vec::new());
    };
    let tree_len = tree.children.len();
    let mut common_right: Vec<Option<Node>> = vec![None; tree_len];
    let mut last_right = tree_len;
    let (mut break_left, mut break_right) = (false, false);
    let mut common_total = 0;
    let mut i = 0usize;
    let mut j = isize_of(tree_len) - 1;
    while common_total < tree_len && j >= 0 && !(break_left && break_right) {
        let ju = j.unsigned_abs();
        let (Some(tree_left), Some(tree_right)) = (tree.children.get(i), tree.children.get(ju))
        else {
            break;
        };
        for (k, node) in nodes.iter().enumerate() {
            if break_left && break_right {
                break;
            }
            if k == idx {
                continue;
            }
            let rest_left = node.children.get(i);
            let rest_right = node.children.get(ju + node.children.len() - tree_len);
            break_left = break_left || rest_left != Some(tree_left);
            break_right = break_right || (!break_left && ju <= i);
            break_right = break_right || rest_right != Some(tree_right);
        }
        if !break_left {
            common_total += 1;
            common_left.push(tree_left.clone());
        }
        if !break_right {
            common_total += 1;
            last_right = ju;
            if let Some(slot) = common_right.get_mut(ju) {
                *slot = Some(tree_right.clone());
            }
        }
        i += 1;
        j -= 1;
    }
    let right = common_right
        .into_iter()
        .skip(last_right)
        .flatten()
        .collect();
    (common_left, right)
}

fn compile_children(tree: &Node, sep: &[char]) -> Result<Vec<Matcher>> {
    tree.children
        .iter()
        .map(|c| compile(c, sep).map(optimize))
        .collect()
}

fn compile(tree: &Node, sep: &[char]) -> Result<Matcher> {
    let m = match &tree.kind {
        Kind::AnyOf => {
            if let Some(n) = minimize_any_of(tree) {
                return compile(&n, sep);
            }
            return Ok(Matcher::AnyOf(compile_children(tree, sep)?));
        }
        Kind::Pattern => {
            if tree.children.is_empty() {
                return Ok(Matcher::Nothing);
            }
            compile_matchers(minimize_matchers(compile_children(tree, sep)?)?)?
        }
        Kind::Any => Matcher::Any(sep.to_vec()),
        Kind::Super => Matcher::Super,
        Kind::Single => Matcher::Single(sep.to_vec()),
        Kind::Nothing => Matcher::Nothing,
        Kind::List { not, chars } => Matcher::List {
            list: chars.chars().collect(),
            not: *not,
        },
        Kind::Range { not, lo, hi } => Matcher::Range {
            lo: *lo,
            hi: *hi,
            not: *not,
        },
        Kind::Text(t) => text(t),
    };
    Ok(optimize(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, seps: &[char], s: &str) -> bool {
        compile_pattern(pattern, seps)
            .unwrap()
            .matches(s.as_bytes())
            .unwrap()
    }

    #[test]
    fn the_common_shapes_match_as_gobwas_documents() {
        assert!(m("*.github.com", &['.'], "api.github.com"));
        assert!(!m("*.github.com", &['.'], "api.cdn.github.com"));
        assert!(m("**.github.com", &['.'], "api.cdn.github.com"));
        assert!(m("api.*.com", &['.'], "api.github.com"));
        assert!(m("*:github:com", &[':'], "api:github:com"));
        assert!(m("?at", &[], "cat"));
        assert!(!m("?at", &[], "at"));
        assert!(m("[abc]at", &[], "bat"));
        assert!(m("[!abc]at", &[], "fat"));
        assert!(!m("[!abc]at", &[], "cat"));
        assert!(m("[a-c]at", &[], "bat"));
        assert!(m("{cat,bat,[fr]at}", &[], "rat"));
        assert!(!m("{cat,bat}", &[], "fat"));
        assert!(m("\\*x", &[], "*x"));
        assert!(m("/api/**", &['/'], "/api/v1/users"));
        assert!(!m("/api/*", &['/'], "/api/v1/users"));
    }

    #[test]
    fn a_super_wildcard_alternative_never_matches_as_in_opa() {
        for s in ["x", "a/x", "a/b/x"] {
            assert!(!m("{**/,}x", &['/'], s), "{s}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in ["[", "[]", "[!]", "[b-a]", "[ab", "a\u{FFFD}"] {
            assert!(compile_pattern(p, &[]).is_err(), "{p}");
        }
    }

    #[test]
    fn quote_meta_escapes_gobwas_specials() {
        let v = quote_meta(&[Value::from("{a*}[?]\\,!-")]).unwrap();
        assert_eq!(v, Value::from("\\{a\\*\\}\\[\\?\\]\\\\,!-"));
    }
}
