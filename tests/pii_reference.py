"""The PII detector as it was written for Python's backtracking `re` (before RE2): the
oracle that tests/test_pii.py compares the linear-time detector with, on short texts only
(its account pattern is cubic and its e-mail pattern quadratic on hostile input).

Regex-based PII detection for the built-in `input_pii` / `output_pii` scorers.

Precision over recall: each detector looks for a shape and then checks what it can (Luhn for
card numbers, valid octets for IPv4, `ipaddress` for IPv6, mod-97 for IBANs, SSA rules for
SSNs, a birth keyword next to a date). Known limits, documented in docs/runtime.md:
- `name` is never reported: a regex cannot tell names from words.
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
import re

from stageguard.runtime.catalog import PII_LABELS

_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"
    r"|(?<![\w+])\+(?:[1-9]\d{0,2})(?:[\s.-]?\d){7,12}(?!\w)"
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?<![vV])(?<![vV]ersion )"
                   r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])[0-9A-Fa-f:]{2,39}(?![\w:])")
_MAC = re.compile(r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b")
_MONTHS = ("jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?")
_DATE = (r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|"
         rf"(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|"
         rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}})")
_DOB = re.compile(
    rf"\b(?:born|birthday|birth\s*date|date\s+of\s+birth|d\.?o\.?b\.?)\b\W{{0,3}}"
    rf"(?:\w+\W+){{0,3}}?{_DATE}", re.IGNORECASE)
_PASSWORD = re.compile(r"\b(?:password|passwd|pwd|passcode|pin)\b\s*(?:is|[:=])\s*\S+",
                       re.IGNORECASE)
_USERNAME = re.compile(r"\b(?:username|user\s*name|user\s*id|login)\b\s*(?:is|[:=])\s*\S+",
                       re.IGNORECASE)
_ACCOUNT = re.compile(r"\b(?:account|acct|routing)\s*(?:number|no\.?|#)?\s*(?:is|[:=#])?\s*"
                      r"\d[\d -]{5,}\d\b", re.IGNORECASE)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|"
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


def _has_card(text: str) -> bool:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and _card_prefix_ok(digits) and luhn_valid(digits):
            return True
    return False


def _has_ipv6(text: str) -> bool:
    for m in _IPV6_CANDIDATE.finditer(text):
        candidate = m.group()
        if candidate.count(":") >= 2:
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


def detect(text: str) -> tuple[str, ...]:
    """The PII labels found in `text`, in the catalog's order."""
    if not text:
        return ()
    found: set[str] = set()
    if _SSN.search(text):
        found.add("ssn")
    if _EMAIL.search(text):
        found.add("email")
    if _has_card(text):
        found.add("credit_card_info")
    if _PHONE.search(text):
        found.add("phone_number")
    if _IPV4.search(text) or _MAC.search(text) or _has_ipv6(text):
        found.add("network_info")
    if _DOB.search(text):
        found.add("date_of_birth")
    if _PASSWORD.search(text):
        found.add("password")
    if _USERNAME.search(text):
        found.add("username")
    if _ACCOUNT.search(text) or any(_iban_valid(m.group()) for m in _IBAN.finditer(text)):
        found.add("account_info")
    if _ADDRESS.search(text):
        found.add("address")
    return tuple(label for label in PII_LABELS if label in found)
