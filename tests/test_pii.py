"""The built-in PII detector (runtime/pii.py): what it finds, that it agrees with the
backtracking detector it replaced, and that no text can make it slow or escape its limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stageguard.runtime import limits, pii
from tests import pii_reference

FOUND = [
    ("my ssn is 123-45-6789", "ssn"),
    ("ssn 123 45 6789.", "ssn"),
    ("write to a.b+c@mail.example.co.uk today", "email"),
    ("call (555) 123-4567 now", "phone_number"),
    ("call 555.123.4567", "phone_number"),
    ("call +44 20 7946 0958", "phone_number"),
    ("Sure! The card on file is 4111-1111-1111-1111.", "credit_card_info"),
    ("amex 3782 822463 10005", "credit_card_info"),
    ("card 4111 1111 1111 1111 123 exp 12/29", "credit_card_info"),
    ("server at 192.168.1.20 is down", "network_info"),
    ("ping fe80::1ff:fe23:4567:890a", "network_info"),
    ("mac 00:1A:2B:3C:4D:5E", "network_info"),
    ("I was born on March 3, 1990", "date_of_birth"),
    ("DOB: 1990-03-03", "date_of_birth"),
    ("password: hunter2", "password"),
    ("my PIN is 1234", "password"),
    ("username is bob_the_builder", "username"),
    ("account number 12345678", "account_info"),
    ("iban GB82 WEST 1234 5698 7654 32", "account_info"),
    ("I live at 221 Baker Street", "address"),
]
NOT_FOUND = [
    ("ssn 000-12-3456", "ssn"),  # area 000 is never issued
    ("ssn 123-45 6789", "ssn"),  # mixed separators
    ("ssn 123456789", "ssn"),  # bare digits
    ("order 4111-1111-1111-1112", "credit_card_info"),  # Luhn fails
    ("version 1.2.3.4", "network_info"),
    ("v1.2.3.4 released", "network_info"),
    ("1.2.3.4.5 is a version too", "network_info"),
    ("the ratio 12:30:45", "network_info"),
    ("the password field", "password"),
    ("my account is fine", "account_info"),
    ("iban GB82 WEST 1234 5698 7654 33", "account_info"),  # mod-97 fails
    ("Your order ships on Tuesday.", "address"),
]


@pytest.mark.parametrize(("text", "label"), FOUND)
def test_each_detector_finds_its_shape(text: str, label: str) -> None:
    assert label in pii.detect(text)


@pytest.mark.parametrize(("text", "label"), NOT_FOUND)
def test_each_detector_checks_what_it_can(text: str, label: str) -> None:
    assert label not in pii.detect(text)


def test_labels_come_in_catalog_order() -> None:
    found = pii.detect("mail a@b.io, ssn 123-45-6789, card 4111111111111111")
    assert found == ("credit_card_info", "email", "ssn")


# Texts the patterns care about: digits, separators, keyword pieces, hex, e-mail and date
# parts. ASCII only: the old detector's \w, \d and \b were Unicode, the RE2 ones are ASCII
# (documented), so on other scripts the two differ on purpose.
_PIECES = st.sampled_from([
    "0", "1", "4", "5", "9", "12", "123", "4111", "-", " ", ".", ":", "/", "(", ")", "+", "@",
    "a", "Z", "fe", "::", "ssn", "born", "dob", "DOB", "password", "pin", "is", "=", "#",
    "account", "number", "no.", "login", "user id", "Street", "Main", "St", "GB82", "WEST",
    "March", "3rd", "1990", "v", "version ", "\t", "\n", "\x0b", "com", "example", "x_y",
])
texts = st.lists(_PIECES, max_size=24).map("".join)


@given(texts)
@example("card 4111 1111 1111 1111 123")
@example("123-45-6789")
@example("a@b.co 1.2.3.4 ::1 born 1990-01-01")
def test_agrees_with_the_backtracking_detector(text: str) -> None:
    new, old = set(pii.detect(text)), set(pii_reference.detect(text))
    # Cards: the old pattern tried one window per run of digit groups; the new detector
    # tries every window, so it finds each card the old one found, and a card followed by
    # its security code besides.
    assert old - new == set()
    assert new - old <= {"credit_card_info"}
    if "credit_card_info" in new - old:
        assert _cards_by_brute_force(text)  # a card by the definition the window test uses


@given(st.text(max_size=200))
def test_total_on_any_text(text: str) -> None:
    found = pii.detect(text)
    assert set(found) <= set(pii.PII_LABELS) and "name" not in found


def test_lone_surrogates_are_read_as_replacement_characters() -> None:
    assert pii.detect("\ud800 ssn 123-45-6789 \udfff") == ("ssn",)


def test_text_over_the_limit_is_refused_before_any_work() -> None:
    with pytest.raises(pii.TextTooLong, match="at most 1,048,576 characters"):
        pii.detect("x" * (limits.SCORED_TEXT + 1))
    assert pii.detect("x" * limits.SCORED_TEXT) == ()


def test_a_passed_deadline_stops_detection() -> None:
    with pytest.raises(pii.DeadlinePassed):
        pii.detect("ssn 123-45-6789", deadline=time.perf_counter() - 1)


def _spin_rate(work: Callable[[], object]) -> float:
    """Steps per second another thread makes while `work` runs."""
    progress = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            progress[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.01)
        before, started = progress[0], time.perf_counter()
        work()
        return (progress[0] - before) / (time.perf_counter() - started)
    finally:
        stop.set()
        spinner.join()


def test_matching_releases_the_gil() -> None:
    # While one thread scans a long text, another keeps running Python at a good part of
    # its own pace: RE2 lets go of the GIL inside a match. (A ratio of two rates measured
    # here, not a time: the backtracking detector holds the GIL and scores near 0.)
    text = "a." * 200_000
    alone = _spin_rate(lambda: time.sleep(0.2))
    scanning = _spin_rate(lambda: [pii.detect(text) for _ in range(4)])
    assert scanning > 0.2 * alone


def _cards_by_brute_force(text: str) -> bool:
    """Every window of every run of digit groups, joined plainly and checked with the
    textbook Luhn: what `_has_card` computes with prefix sums."""
    import re

    for m in re.finditer(r"[0-9]+(?:[ -][0-9]+)*", text):
        start, end = m.span()
        first_ok = not (start and text[start - 1] == "-")
        last_ok = not (end < len(text) and text[end] == "-")
        parts = m.group().split(" ")
        for i in range(len(parts)):
            for j in range(i + 1, len(parts) + 1):
                if (i == 0 and not first_ok) or (j == len(parts) and not last_ok):
                    continue
                digits = "".join(parts[i:j]).replace("-", "")
                if 13 <= len(digits) <= 19 and pii._card_prefix_ok(digits) \
                        and pii.luhn_valid(digits):
                    return True
    return False


_GROUP = st.text(alphabet="0123456789", min_size=1, max_size=6)
_SEP = st.sampled_from([" ", "-", " ", "x", "--"])
noise = st.lists(st.tuples(_GROUP, _SEP), max_size=4).map(
    lambda gs: "".join(g + sep for g, sep in gs))
_CARDS = ["4111111111111111", "378282246310005", "5555555555554444", "6011000990139424",
          "4012888888881881", "3530111333300000", "30569309025904", "4222222222222"]


@st.composite
def card_texts(draw: st.DrawFn) -> str:
    """Real test card numbers cut into groups at random places, among random groups, with
    spaces, dashes and other characters between them: windows that are cards, windows that
    miss by a digit, runs a dash joins to a neighbour."""
    number = draw(st.sampled_from(_CARDS))
    cuts = sorted(draw(st.sets(st.integers(1, len(number) - 1), max_size=5)))
    pieces = [number[a:b] for a, b in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    if draw(st.booleans()):  # off by one digit
        pieces[-1] = pieces[-1][:-1] + str((int(pieces[-1][-1]) + 1) % 10)
    body = "".join(p + draw(_SEP) for p in pieces[:-1]) + pieces[-1]
    return draw(noise) + body + draw(_SEP) + draw(noise)


@given(st.one_of(card_texts(), noise))
@example("4111 1111 1111 1111 123")
@example("-4111 1111 1111 1111")
@example("4111-1111-1111-1111-")
def test_card_windows_agree_with_brute_force(text: str) -> None:
    assert pii._has_card(text) == _cards_by_brute_force(text)
