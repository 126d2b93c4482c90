"""PII detection for the built-in `input_pii` / `output_pii` scorers, in time linear in the
text.

Every pattern runs on RE2 (google-re2): no backtracking, so no input can make a pattern
slow, and RE2 releases the GIL while it matches, so a long text does not stall the service's
event loop. RE2 has no look-around or back-references; where the patterns need them, a
pattern finds candidates and a few lines of Python check each one's neighbours (each
candidate is looked at once, so the checks are linear too). Texts longer than
`limits.SCORED_TEXT` characters are refused (`TextTooLong`), and a `deadline` stops the
detectors between patterns.

Precision over recall: each detector looks for a shape and then checks what it can (Luhn for
card numbers, valid octets for IPv4, `ipaddress` for IPv6, mod-97 for IBANs, SSA rules for
SSNs, a birth keyword next to a date). Known limits, documented in docs/runtime.md:
- `name` is never reported: a regex cannot tell names from words.
- Word characters, digits and word boundaries are ASCII (RE2's): "é" is not a letter to
  these patterns, and digits of other scripts are not digits.
- SSNs are found only written with separators (123-45-6789 / 123 45 6789); nine bare digits
  are too often something else.
- Phone numbers: North American forms and international numbers written with a leading `+`.
- Addresses: US-style street addresses ("221 Baker Street", "10 Main St.").
- network_info: IPv4 (not after "v"/"version", which marks a version number), IPv6, MAC.
- date_of_birth: a date within a few words after "born", "birthday", "date of birth" or "DOB".
- password / username / account_info: a keyword followed by a value ("password: hunter2",
  "account number 12345678"), or an IBAN.
"""

from __future__ import annotations

import ipaddress
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate

import re2

from stageguard.runtime import limits
from stageguard.runtime.catalog import PII_LABELS
from stageguard.runtime.unicode import without_surrogates


class TextTooLong(ValueError):
    """The text is longer than a built-in scorer reads."""


class DeadlinePassed(TimeoutError):
    """The invocation's deadline passed while detecting."""


# Python's `\s` (its ASCII part, and Unicode's spaces), which RE2's narrower `\s` is not.
_SPACES = r"\t-\r\x1c-\x1f \x{85}\pZ"


def _re(pattern: str) -> re2._Regexp:
    pattern = (pattern.replace(r"[\s", "[" + _SPACES).replace(r"\s", f"[{_SPACES}]")
               .replace(r"\S", f"[^{_SPACES}]"))
    return re2.compile(pattern)


_SSN = _re(r"\b([0-9]{3})([- ])([0-9]{2})([- ])([0-9]{4})\b")
_EMAIL = _re(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = _re(
    r"(?:^|[^\w+])(?:(?:\+?1[\s.-]?)?(?:\([0-9]{3}\)\s?|[0-9]{3}[\s.-])[0-9]{3}[\s.-][0-9]{4}"
    r"(?:$|[^\w-])"
    r"|\+[1-9][0-9]{0,2}(?:[\s.-]?[0-9]){7,12}(?:$|\W))")
# Digit groups joined by single spaces or dashes, 13 digits or more: card numbers are
# windows of such runs. (Leftmost and greedy, a match is a whole maximal run; shorter runs
# never reach Python.)
_DIGIT_RUN = _re(r"[0-9](?:[ -]?[0-9]){12,}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = _re(rf"(?:^|[^0-9.vV])({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})")
# A whole run of word characters and colons holding two colons or more (greedy on both
# sides, leftmost: the match is the maximal run).
_IPV6_RUN = _re(r"[\w:]*:[\w:]*:[\w:]*")
_IPV6_SHAPE = _re(r"^[0-9A-Fa-f:]{2,39}$")
_MAC = _re(r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b")
_MONTHS = ("jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_DATE = (r"(?:[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}|"
         rf"(?:{_MONTHS})\.?\s+[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s+[0-9]{{4}}|"
         rf"[0-9]{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+[0-9]{{4}})")
_DOB = _re(
    rf"(?i)\b(?:born|birthday|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?)\b\W{{0,3}}"
    rf"(?:\w+\W+){{0,3}}?{_DATE}")
_PASSWORD = _re(r"(?i)\b(?:password|passwd|pwd|passcode|pin)\b\s*(?:is|[:=])\s*\S+")
_USERNAME = _re(r"(?i)\b(?:username|user\s*name|user\s*id|login)\b\s*(?:is|[:=])\s*\S+")
_ACCOUNT = _re(r"(?i)\b(?:account|acct|routing)\s*(?:number|no\.?|#)?\s*(?:is|[:=#])?\s*"
               r"[0-9][0-9 -]{5,}[0-9]\b")
_IBAN = _re(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_ADDRESS = _re(
    r"\b[0-9]{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|"
    r"Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq)\b\.?")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    return (
        (digits[0] == "4" and n in (13, 16, 19))  # Visa
        or (51 <= two <= 55 and n == 16) or (2221 <= four <= 2720 and n == 16)  # Mastercard
        or (two in (34, 37) and n == 15)  # Amex
        or ((digits.startswith("6011") or two == 65) and n in (16, 19))  # Discover
        or (two == 35 and 16 <= n <= 19)  # JCB
        or (two in (30, 36, 38) and n == 14)  # Diners
    )


def _has_ssn(text: str) -> bool:
    for m in _SSN.finditer(text):
        area, sep, group, sep2, serial = m.groups()
        if (sep == sep2 and area not in ("000", "666") and area[0] != "9" and group != "00"
                and serial != "0000"):
            return True
    return False


def _has_card(text: str, deadline: float | None = None) -> bool:
    """A card number is 13-19 digits, grouped by single spaces or dashes, with a dash or a
    digit on neither side. Within a run of groups (`4111 1111 1111 1111 123`: a card and its
    code) every window that starts and ends at a space or the run's edge is tried, each in
    constant time (Luhn sums come from prefix sums), so the work stays linear in the run."""
    n = len(text)
    for m in _DIGIT_RUN.finditer(text):
        start, end = m.span()
        # A dash just outside the run joins it to a neighbour: no window may start or end
        # there (the run's own edges), only at spaces inside it.
        first_ok = not (start and text[start - 1] == "-")
        last_ok = not (end < n and text[end] == "-")
        if _run_has_card(m.group(), first_ok, last_ok, deadline):
            return True
    return False


_DOUBLED = str.maketrans("0123456789", "0246813579")  # d -> the digit sum of 2d


def _run_has_card(run: str, first_ok: bool, last_ok: bool, deadline: float | None) -> bool:
    digits = run.replace(" ", "").replace("-", "")
    bounds = [0]  # where windows may start and end: the run's edges and its spaces
    for part in run.split(" "):
        bounds.append(bounds[-1] + len(part) - part.count("-"))
    # Luhn: from a window's last digit leftwards every second digit is doubled. s_even
    # doubles odd positions, s_odd even ones; a window ending at an even position b - 1
    # takes its sum from s_even, else from s_odd. Characters carry ord("0") = 48 each.
    raw, doubled = digits.encode(), digits.translate(_DOUBLED).encode()
    even, odd = bytearray(raw), bytearray(raw)
    even[1::2], odd[0::2] = doubled[1::2], doubled[0::2]
    s_even, s_odd = [0, *accumulate(even)], [0, *accumulate(odd)]
    last = len(bounds) - 1
    for i in range(0 if first_ok else 1, last):
        if deadline is not None and not i % 4096 and time.perf_counter() > deadline:
            raise DeadlinePassed("the invocation's deadline passed during PII detection")
        a = bounds[i]
        if digits[a] not in "23456":  # no issuer's numbers start otherwise
            continue
        for j in range(bisect_left(bounds, a + 13, i + 1), bisect_right(bounds, a + 19, i + 1)):
            if j == last and not last_ok:
                break
            b = bounds[j]
            sums = s_even if (b - 1) % 2 == 0 else s_odd
            if (sums[b] - sums[a] - 48 * (b - a)) % 10 == 0 and _card_prefix_ok(digits[a:b]):
                return True
    return False


def _has_ipv4(text: str) -> bool:
    n = len(text)
    for m in _IPV4.finditer(text):
        start, end = m.span(1)
        if end < n and (text[end] == "." or "0" <= text[end] <= "9"):
            continue
        if text[max(0, start - 8):start] in ("version ", "Version "):
            continue
        return True
    return False


def _has_ipv6(text: str) -> bool:
    for m in _IPV6_RUN.finditer(text):
        candidate = m.group()
        if _IPV6_SHAPE.search(candidate):
            try:
                ipaddress.IPv6Address(candidate)
                return True
            except ValueError:
                continue
    return False


def _iban_valid(raw: str) -> bool:
    iban = raw.replace(" ", "")
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _has_account(text: str) -> bool:
    return bool(_ACCOUNT.search(text)) or any(_iban_valid(m.group())
                                              for m in _IBAN.finditer(text))


# Each detector takes the text and the deadline (which only the card windows, the one
# detector doing per-candidate work in Python, need to watch between candidates).
_DETECTORS: tuple[tuple[str, Callable[[str, float | None], bool]], ...] = (
    ("ssn", lambda t, _: _has_ssn(t)),
    ("email", lambda t, _: bool(_EMAIL.search(t))),
    ("credit_card_info", _has_card),
    ("phone_number", lambda t, _: bool(_PHONE.search(t))),
    ("network_info", lambda t, _: _has_ipv4(t) or bool(_MAC.search(t)) or _has_ipv6(t)),
    ("date_of_birth", lambda t, _: bool(_DOB.search(t))),
    ("password", lambda t, _: bool(_PASSWORD.search(t))),
    ("username", lambda t, _: bool(_USERNAME.search(t))),
    ("account_info", lambda t, _: _has_account(t)),
    ("address", lambda t, _: bool(_ADDRESS.search(t))),
)


def detect(text: str, deadline: float | None = None) -> tuple[str, ...]:
    """The PII labels found in `text`, in the catalog's order. `deadline` is a
    `time.perf_counter()` instant: past it, `DeadlinePassed` is raised between detectors."""
    if not text:
        return ()
    problem = limits.over("scored_text", len(text))
    if problem:
        raise TextTooLong(problem)
    text = without_surrogates(text)  # RE2 reads UTF-8, which holds no lone surrogate
    found: set[str] = set()
    for label, detector in _DETECTORS:
        if deadline is not None and time.perf_counter() > deadline:
            raise DeadlinePassed("the invocation's deadline passed during PII detection")
        if detector(text, deadline):
            found.add(label)
    return tuple(label for label in PII_LABELS if label in found)
