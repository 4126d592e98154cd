"""The External Term Format codec, checked against the bytes and the behaviour of a real BEAM.

The expected bytes below were written by OTP 25's ``term_to_binary(t, [{minor_version, 2}])``
(the form distribution uses: UTF-8 atoms). The property tests keep one ``erl`` process for the
module and ask it, for each generated term, to decode our bytes, to build the same term from
Erlang source, and to encode it back three ways.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodelab.dist import term_format as etf
from nodelab.dist.term_format import (
    MAX_BIG_BYTES,
    MAX_DEPTH,
    NO_MESSAGE,
    Atom,
    AtomCache,
    BitBinary,
    Export,
    Fun,
    ImproperList,
    Port,
    TermDecodeError,
    TermEncodeError,
    decode,
    decode_dist_message,
    decode_from,
    encode,
    encode_body,
    encode_dist_message,
)
from nodelab.runtime.pids import Pid, Ref

# A hostile input must be refused quickly; generous, since CI machines are busy.
QUICK = 2.0


def typed(value: object) -> object:
    """``value`` with every type made explicit: Atom("a") == "a" and 1 == 1.0 == True in
    Python, but they are different terms, and a test must tell them apart."""
    kind = type(value)
    if kind in (list, tuple):
        return (kind.__name__, tuple(typed(item) for item in value))
    if kind is dict:
        return ("dict", frozenset((typed(k), typed(v)) for k, v in value.items()))
    if kind is ImproperList:
        return ("improper", typed(value.items), typed(value.tail))
    return (kind.__name__, value)


def assert_same(actual: object, expected: object) -> None:
    assert typed(actual) == typed(expected), f"{actual!r} != {expected!r}"


# ---------------------------------------------------------------------------------------------
# Each row of the mapping, both ways.

PID = Pid("kate@localhost", 112, 1_700_000_001, 3)
REF = Ref("kate@localhost", (0x3FFFF, 0xDEADBEEF, 42), 1_700_000_001)

ROWS = [
    (Atom("hi"), "8377026869"),
    (Atom("with space"), "83770A77697468207370616365"),
    (Atom("kät"), "8377046BC3A474"),
    (True, "83770474727565"),
    (False, "83770566616C7365"),
    (None, "8377036E696C"),
    ("sup?", "836D000000047375703F"),
    ("héllo ✓", "836D0000000A68C3A96C6C6F20E29C93"),
    (b"\xff\x00\x01", "836D00000003FF0001"),
    ("", "836D00000000"),
    (BitBinary(b"\x01\x20", 3), "834D00000002030120"),
    (42, "83612A"),
    (-1, "8362FFFFFFFF"),
    (2**31 - 1, "83627FFFFFFF"),
    (-(2**31), "836280000000"),
    (2**64, "836E0900000000000000000001"),
    (-(2**64), "836E0901000000000000000001"),
    (2**2048, "836F0000010100" + "00" * 256 + "01"),
    (1.5, "83463FF8000000000000"),
    (-2.25e-300, "834681B81BE3BB5811C4"),
    ((Atom("ok"), 1), "83680277026F6B6101"),
    ((), "836800"),
    (tuple(range(1, 257)),
     "836900000100" + "".join(f"61{n:02X}" for n in range(1, 256)) + "6200000100"),
    ([1, Atom("hi")], "836C000000026101770268696A"),
    ([], "836A"),
    ([97, 98, 99], "836B0003616263"),
    (ImproperList([1, 2], Atom("t")), "836C0000000261016102770174"),
    ({Atom("a"): 1}, "8374000000017701616101"),
    (Export("lists", "map", 2), "837177056C6973747377036D61706102"),
    ((Atom("nested"), [{"k": [Atom("x"), 2.0]}], None),
     "836803770" "66E6573746564" "6C00000001" "74000000016D000000016B"
     "6C00000002770178" "464000000000000000" "6A" "6A" "77036E696C"),
    (PID, "835877" "0E" + b"kate@localhost".hex() + "00000070" "00000003" "6553F101"),
    (REF, "835A000377" "0E" + b"kate@localhost".hex() + "6553F101" "0003FFFF" "DEADBEEF"
     "0000002A"),
    (Port("kate@localhost", 5, 7), "835977" "0E" + b"kate@localhost".hex() + "00000005"
     "00000007"),
    (Port("kate@localhost", 2**40, 7), "837877" "0E" + b"kate@localhost".hex()
     + "0000010000000000" "00000007"),
]


@pytest.mark.parametrize(("value", "wire"), ROWS, ids=[repr(v)[:40] for v, _ in ROWS])
def test_each_row_of_the_mapping_both_ways(value: object, wire: str | None) -> None:
    data = encode(value)
    if wire is not None:
        assert data.hex().upper() == wire.upper()
    assert_same(decode(data), value)


def test_an_atom_is_a_str_that_matches_like_one() -> None:
    assert Atom("hi") == "hi"
    assert hash(Atom("hi")) == hash("hi")
    assert ("hi", 1) == (Atom("hi"), 1)
    assert str(Atom("hi")) == "hi" and type(str(Atom("hi"))) is str
    assert type(decode(encode(Atom("hi")))) is Atom
    assert type(decode(encode("hi"))) is str


@pytest.mark.parametrize(("name", "shown"), [
    ("hi", ":hi"), ("with space", ':"with space"'), ("Elixir.Kate", "Kate"),
    ("Elixir.Kate.Sub", "Kate.Sub"), ("Elixir.kate", ':"Elixir.kate"'), ("Hi", ":Hi"),
    ("kate@localhost", ":kate@localhost"), ("ok?", ":ok?"), ("é", ":é"), ('a"b', ':"a\\"b"'),
    ("", ':""'), ("nil", "nil"), ("true", "true"), ("@a", ':"@a"'), ("a\nb", ':"a\\nb"'),
    ("+", ':"+"'),
])
def test_atoms_print_as_elixir_shows_them(name: str, shown: str) -> None:
    assert repr(Atom(name)) == shown


def test_old_latin1_atoms_and_floats_decode() -> None:
    assert_same(decode(bytes.fromhex("8364000268E9")), Atom("hé"))  # ATOM_EXT, Latin-1
    assert_same(decode(bytes.fromhex("83730368E96F")), Atom("héo"))  # SMALL_ATOM_EXT
    assert_same(decode(b"\x83d\x00\x04true"), True)
    old_float = b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0")
    assert_same(decode(old_float), 1.5)


def test_old_pids_references_and_ports_decode() -> None:
    node = b"\x77\x03a@b"
    pid = decode(b"\x83g" + node + struct.pack(">IIB", 7, 2, 3))
    assert (pid.node, pid.serial, pid.generation, pid.creation) == ("a@b", 7, 2, 3)
    ref = decode(b"\x83r\x00\x02" + node + b"\x03" + struct.pack(">II", 1, 2))
    assert (ref.node, ref.words, ref.creation) == ("a@b", (1, 2), 3)
    ref = decode(b"\x83e" + node + struct.pack(">IB", 9, 1))
    assert (ref.words, ref.creation) == ((9,), 1)
    assert decode(b"\x83f" + node + struct.pack(">IB", 5, 2)) == Port("a@b", 5, 2)


def test_binaries_bitstrings_and_lists_decode_as_the_beam_reads_them() -> None:
    assert decode(b"\x83M\x00\x00\x00\x01\x08\xff") == b"\xff"  # 8 bits used: a binary
    assert decode(b"\x83M\x00\x00\x00\x00\x00") == ""
    assert decode(b"\x83M\x00\x00\x00\x01\x03\xff") == BitBinary(b"\xe0", 3)
    # [1 | [2]], written as two cells, is the proper list [1, 2].
    assert decode(b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02j") == [1, 2]
    assert decode(b"\x83l\x00\x00\x00\x00a\x01") == 1  # no elements: the tail itself
    assert decode(b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02a\x03") == ImproperList(
        [1, 2], 3)
    assert decode(b"\x83n\x00\x00") == 0


def test_a_list_of_bytes_goes_out_as_the_beam_sends_a_charlist() -> None:
    assert encode([1, 2, 255]) == b"\x83k\x00\x03\x01\x02\xff"
    assert encode([True])[1] == etf.LIST_EXT  # True is the atom true, not 1
    assert encode([256])[1] == etf.LIST_EXT
    assert encode(list(range(256)) * 257)[1] == etf.LIST_EXT  # over 65535 elements
    assert_same(decode(encode([7, 8, 9])), [7, 8, 9])  # stays a list of ints


def test_subclasses_encode_as_their_base() -> None:
    import collections
    import enum

    class Size(enum.IntEnum):
        BIG = 300

    point = collections.namedtuple("point", "x y")
    assert decode(encode(Size.BIG)) == 300
    assert_same(decode(encode(point(1, 2))), (1, 2))
    assert_same(decode(encode(collections.OrderedDict(a=1))), {"a": 1})
    assert_same(decode(encode(bytearray(b"\xff"))), b"\xff")
    assert_same(decode(encode(memoryview(b"\xff\xfe"))), b"\xff\xfe")


def test_improper_lists_and_bitbinaries_keep_their_rules() -> None:
    assert ImproperList([1], ImproperList([2], 3)) == ImproperList([1, 2], 3)
    assert repr(ImproperList([1, Atom("a")], Atom("t"))) == "[1, :a | :t]"
    with pytest.raises(ValueError, match="proper list"):
        ImproperList([1], [2])
    with pytest.raises(ValueError, match="at least one"):
        ImproperList([], 3)
    assert BitBinary(b"\xff", 3) == BitBinary(b"\xe0", 3)  # unused bits are cleared
    assert BitBinary(b"\x01\x20", 3).bit_size == 11
    assert repr(BitBinary(b"\x01\x20", 3)) == "<<1, 1::size(3)>>"
    with pytest.raises(ValueError):
        BitBinary(b"\x01", 8)


def test_a_map_whose_keys_collide_in_python_is_refused_not_shrunk() -> None:
    both = b"\x83t\x00\x00\x00\x02" + encode(Atom("a"))[1:] + b"a\x01" + encode("a")[1:] + b"a\x02"
    with pytest.raises(TermDecodeError, match="collide"):
        decode(both)
    list_key = b"\x83t\x00\x00\x00\x01" + encode([1, 2])[1:] + b"a\x01"
    with pytest.raises(TermDecodeError, match="dict form"):
        decode(list_key)


@pytest.mark.parametrize(("value", "advice"), [
    (lambda: 1, "send module, function and args"),
    (print, "send module, function and args"),
    ({1, 2}, "send a list"),
    (frozenset(), "send a list"),
    (1j, "tuple"),
    (math.nan, "no float nan"),
    (math.inf, "no float inf"),
    (object(), "no Erlang form"),
    (iter([]), "list"),
    (int, "Atom"),
    ("\ud800", "surrogates"),
    (Atom("x" * 256), "at most 255"),
    (2 ** (8 * MAX_BIG_BYTES), "larger than the BEAM accepts"),
    (Pid("a@b", 2**32, 1), "does not fit"),
    (Ref("a@b", (), 1), "1 to 5"),
], ids=lambda value: type(value).__name__ if not isinstance(value, str) else value[:9])
def test_a_value_with_no_erlang_form_says_what_to_send_instead(value: object, advice: str) -> None:
    with pytest.raises(TermEncodeError, match=advice) as caught:
        encode((Atom("wrapped"), [value]))
    assert isinstance(caught.value, TypeError)


def test_a_list_that_contains_itself_is_refused() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(TermEncodeError, match="contains itself"):
        encode(loop)
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = (deep,)
    with pytest.raises(TermEncodeError, match="deep"):
        encode(deep)


def test_decode_from_reads_terms_one_after_another() -> None:
    data = encode(Atom("a")) + encode((1, 2)) + encode("x")
    first, offset = decode_from(data)
    second, offset = decode_from(data, offset)
    third, offset = decode_from(data, offset)
    assert (first, second, third, offset) == (Atom("a"), (1, 2), "x", len(data))
    with pytest.raises(TermDecodeError, match="decode_from"):
        decode(data)
    assert etf.decode_body_from(encode_body([1, Atom("b")])) == ([1, Atom("b")], 11)


def test_compressed_terms_inflate() -> None:
    body = encode(["hello"] * 100)[1:]
    packed = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body)
    assert decode(packed) == ["hello"] * 100
    assert decode_from(packed + encode(1)) == (["hello"] * 100, len(packed))


def test_funs_keep_their_bytes() -> None:
    fun = decode(bytes.fromhex(BEAM_FUN))
    assert isinstance(fun, Fun) and fun.module == "erl_eval" and fun.arity == 1
    assert encode(fun) == bytes.fromhex(BEAM_FUN)
    assert repr(fun).startswith("#Function<") and ":erl_eval" in repr(fun)


# ``fun(X) -> X end`` typed into OTP 25's erl, as term_to_binary wrote it.
BEAM_FUN = (
    "83700000009701065361AA461590D1BDF1EB62D1A6EB080000002A00000001770865726C5F6576616C612A"
    "6200329B0D58770D6E6F6E6F6465406E6F686F7374000000090000000000000000680661016A77046E6F6E"
    "6577046E6F6E6574000000006C0000000168057706636C6175736561016C000000016803770376617261"
    "017701586A6A6C000000016803770376617261017701586A6A"
)


# ---------------------------------------------------------------------------------------------
# Distribution frames.

# Frames an OTP 25 node (probe@vm) sent to a Python node that had not offered
# DFLAG_DIST_HDR_ATOM_CACHE: 112, then the control message and the message, each with 131.
PASS_THROUGH_FRAME = (
    "70836803611658770870726f626540766d00000055000000006b0f7fc558770d707931406c6f63616c686f"
    "7374000000010000000001234567836806770568656c6c6f6b00030102036d0000000362696e7400000001"
    "77016b463ff80000000000006c00000001770161770162770568656c6c6f"
)
# The frames the same node sent to a node that *had* offered it: 131 68 and a DIST_HEADER
# whose atoms the following frames refer to by cache slot.
ATOM_CACHE_FRAMES = [
    "8344048fdc00d90870726f626540766d05007603726578061066656174757265735f72657175657374680461"
    "0658520000000036000000006b0f7fc552015202680258520000000036000000006b0f7fc55203",
    "834409078ddd8d0bd9055612676c6f62616c5f6e616d655f73657276657256092467656e5f63617374620c"
    "696e69745f636f6e6e65637483066c6f636b6572e10f6e6f5f6c6f6e6765725f615f7069649a0d636f6e6e"
    "656374696f6e5f69640b0d707932406c6f63616c686f73746804610658520000000037000000006b0f7fc5"
    "520152026802520368045204680261086e0801fdffffffffffff0752006804520552067400000001680252"
    "075208620010c45e58520000000038000000006b0f7fc5",
    "834406378fbf00d90b950568656c6c6f41016be301610a01626803611658520000000055000000006b0f7f"
    "c5585201000000010000000001234567680652026b00030102036d0000000362696e740000000152034"
    "63ff80000000000006c00000001520452055202",
    "83440737797003d90bc305616761696e9541e30a6803611658520000000055000000006b0f7fc558520100"
    "000001000000000123456768025202680652036b00030102036d0000000362696e74000000015204463ff8"
    "0000000000006c00000001520552065203",
    "83440637073700d90b9541e30a6803611658520000000055000000006b0f7fc55852010000000100000000"
    "01234567680652026b00030102036d0000000362696e74000000015203463ff80000000000006c00000001"
    "520452055202",
]
SENT = (Atom("hello"), [1, 2, 3], "bin", {Atom("k"): 1.5}, ImproperList([Atom("a")], Atom("b")),
        Atom("hello"))


def test_a_pass_through_frame_from_otp_25_decodes_and_encodes_back_byte_for_byte() -> None:
    frame = bytes.fromhex(PASS_THROUGH_FRAME)
    control, message = decode_dist_message(frame)
    assert control == (22, Pid("probe@vm", 85, 0x6B0F7FC5), Pid("py1@localhost", 1, 0x1234567))
    assert_same(message, SENT)
    assert encode_dist_message(control, message) == frame


def test_frames_with_a_dist_header_decode_with_the_connections_atom_cache() -> None:
    cache = AtomCache()
    decoded = [decode_dist_message(bytes.fromhex(frame), cache) for frame in ATOM_CACHE_FRAMES]
    assert decoded[0] == ((6, Pid("probe@vm", 54, 0x6B0F7FC5), Atom(""), Atom("rex")),
                          (Pid("probe@vm", 54, 0x6B0F7FC5), Atom("features_request")))
    assert decoded[1][1][1][0] == Atom("init_connect")
    sender = Pid("probe@vm", 85, 0x6B0F7FC5)
    me = Pid("py2@localhost", 1, 0x1234567)
    assert decoded[2][0] == (22, sender, me)
    assert_same(decoded[2][1], SENT)
    assert_same(decoded[3][1], (Atom("again"), SENT))
    assert_same(decoded[4][1], SENT)  # every atom by a slot filled in an earlier frame
    with pytest.raises(TermDecodeError, match="never filled"):
        decode_dist_message(bytes.fromhex(ATOM_CACHE_FRAMES[4]), AtomCache())
    with pytest.raises(TermDecodeError, match="AtomCache"):
        decode_dist_message(bytes.fromhex(ATOM_CACHE_FRAMES[0]))


def test_dist_messages_with_and_without_a_payload() -> None:
    link = (1, PID, PID)
    assert encode_dist_message(link) == b"p" + encode(link)
    assert decode_dist_message(encode_dist_message(link)) == (link, None)
    send = (2, Atom(""), PID)
    frame = encode_dist_message(send, None)  # nil is a message like any other
    assert frame == b"p" + encode(send) + encode(None)
    assert decode_dist_message(frame) == (send, None)
    assert repr(NO_MESSAGE) == "NO_MESSAGE"
    for bad in (b"", b"q\x83a\x01", b"\x83E\x00", b"p" + encode(1) + encode(2) + encode(3)):
        with pytest.raises(TermDecodeError):
            decode_dist_message(bad)


def _dist_message_the_long_way(data: bytes) -> tuple[object, object]:
    """decode_dist_message of a pass-through frame spelled out with decode_from, term by
    term: what its fast path (no decode_from, one try) must agree with."""
    control, pos = decode_from(data, 1)
    if pos == len(data):
        return control, None
    message, pos = decode_from(data, pos)
    if pos != len(data):
        raise TermDecodeError("bytes after the message")
    return control, message


_frame_nodes = st.sampled_from(["kate@localhost", "a@b", "kätë@höst"])
_u32 = st.integers(0, 2**32 - 1)
#: Control messages as a BEAM sends them (SEND_SENDER) and as nodelab does (SEND and others).
controls = st.one_of(
    st.tuples(st.just(22), st.builds(Pid, _frame_nodes, _u32, _u32, _u32),
              st.builds(Pid, _frame_nodes, _u32, _u32)),
    st.tuples(st.integers(0, 40), st.just(Atom("")),
              st.builds(Pid, _frame_nodes, st.integers(0, 99), st.integers(0, 99))),
)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_corrupted_dist_frame_decodes_as_the_long_way_does_or_is_refused(
        data: st.DataObject) -> None:
    frame = bytearray(encode_dist_message((22, PID, PID), (Atom("ping"), PID, [1, "x"], REF)))
    for _ in range(data.draw(st.integers(1, 3))):
        frame[data.draw(st.integers(1, len(frame) - 1))] = data.draw(st.integers(0, 255))
    frame = bytes(frame[:data.draw(st.integers(2, len(frame)))])
    try:
        expected = _dist_message_the_long_way(frame)
    except TermDecodeError:
        with pytest.raises(TermDecodeError):
            decode_dist_message(frame)
        return
    assert_same(decode_dist_message(frame), expected)


def test_a_pid_and_a_ref_of_this_node_go_out_with_its_current_name_and_creation() -> None:
    from nodelab.runtime import pids

    local, ref = Pid.of_this_node(7), pids.make_ref()
    name, creation = pids.local_node(), pids.local_creation()
    try:
        pids.set_local_node("now@named", 0x1234)
        assert_same(decode(encode(local)), Pid("now@named", 7, 0x1234))
        assert encode(local) == encode(Pid("now@named", 7, 0x1234))
        assert decode(encode(ref)) == Ref("now@named", ref.words, 0x1234)
    finally:
        pids.set_local_node(name, creation)


# ---------------------------------------------------------------------------------------------
# Hostile input: one error type, quickly, whatever the bytes.


def refused(data: bytes, match: str | None = None) -> TermDecodeError:
    started = time.monotonic()
    with pytest.raises(TermDecodeError, match=match) as caught:
        decode(data)
    assert time.monotonic() - started < QUICK
    return caught.value


def test_every_truncation_of_a_term_is_refused() -> None:
    fun = decode(bytes.fromhex(BEAM_FUN))
    rich = encode((Atom("ping"), PID, REF, [1, 2.5, "bin", b"\xff", {Atom("k"): [1, 2, 300]}],
                   ImproperList([1], 2), 2**100, -(2**3000), BitBinary(b"\x01", 1),
                   Port("a@b", 1, 2), Export("m", "f", 1), fun, "é" * 3))
    for end in range(len(rich)):
        refused(rich[:end])


@pytest.mark.parametrize(("opening", "closing"), [
    (b"l\x00\x00\x00\x01", b"j"),  # [[[...]]]: each list ends in its own NIL
    (b"h\x01", b""),  # {{{...}}}
    (b"h\x02a\x01", b""),  # {1, {1, ...}}: pairs and triples are decoded without the loop
    (b"h\x03a\x01a\x02", b""),  # {1, 2, {1, 2, ...}}
    (b"t\x00\x00\x00\x01a\x01", b""),  # %{1 => %{1 => ...}}
])
def test_deep_nesting_is_refused_without_a_recursion_error(opening: bytes, closing: bytes) -> None:
    def nested(levels: int) -> bytes:
        return b"\x83" + opening * levels + b"j" + closing * levels

    refused(nested(200_000), "levels deep")
    assert decode(nested(MAX_DEPTH)) is not None
    refused(nested(MAX_DEPTH + 1), "levels deep")


def test_deep_nesting_in_a_thread_with_little_stack_left_is_still_a_decode_error() -> None:
    errors: list[BaseException] = []

    def nest(levels: int) -> None:
        if levels:
            nest(levels - 1)
            return
        try:
            decode(b"\x83" + b"h\x01" * MAX_DEPTH + b"j")
        except BaseException as exc:  # noqa: BLE001 - the test reports what came out
            errors.append(exc)

    thread = threading.Thread(target=nest, args=(900,))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [type(exc) for exc in errors] == [TermDecodeError], errors


@pytest.mark.parametrize("data", [
    b"\x83l\xff\xff\xff\xff",  # a list of 4 billion elements
    b"\x83l\xff\xff\xff\xffa\x01",
    b"\x83h\xff",
    b"\x83i\xff\xff\xff\xff",
    b"\x83t\xff\xff\xff\xff",
    b"\x83m\xff\xff\xff\xff",
    b"\x83M\xff\xff\xff\xff\x03",
    b"\x83k\xff\xffabc",
    b"\x83v\xff\xffabc",
    b"\x83o\xff\xff\xff\xff\x00",
    b"\x83Z\xff\xff\x77\x01a" + b"\x00" * 8,
    b"\x83p\xff\xff\xff\xff" + b"\x00" * 40,
    b"\x83P\xff\xff\xff\xff" + zlib.compress(b"a\x01"),
], ids=lambda data: data[:3].hex())
def test_giant_length_fields_are_refused_before_anything_is_allocated(data: bytes) -> None:
    refused(data)


def test_a_compressed_term_that_inflates_past_its_claim_is_refused() -> None:
    bomb = zlib.compress(b"m\x04\x00\x00\x00" + b"\x00" * (8 << 20), 9)
    refused(b"\x83P\x00\x00\x00\x10" + bomb, "announces")
    refused(b"\x83P\x00\x00\x00\x05" + b"not zlib", "inflate")


def test_giant_integers_are_capped_at_the_beams_own_limit() -> None:
    largest = b"\x83o" + struct.pack(">I", MAX_BIG_BYTES) + b"\x00" + b"\xff" * MAX_BIG_BYTES
    assert decode(largest) == 2 ** (8 * MAX_BIG_BYTES) - 1
    refused(b"\x83o" + struct.pack(">I", MAX_BIG_BYTES + 1) + b"\x00"
            + b"\xff" * (MAX_BIG_BYTES + 1), "larger than the BEAM allows")
    refused(b"\x83n\x01\x02\x01", "sign")


SUPPORTED = {70, 77, 88, 89, 90, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
             110, 111, 112, 113, 114, 115, 116, 118, 119, 120}


@pytest.mark.parametrize("tag", sorted(set(range(256)) - SUPPORTED))
def test_unknown_tags_are_refused(tag: int) -> None:
    refused(bytes((131, tag)) + b"\x00" * 8)


def test_not_a_term_at_all() -> None:
    refused(b"", "no term")
    refused(b"\x84a\x01", "version byte 131")
    refused(b"\x83", "truncated|no term")
    refused(b"\x83R\x00", "ATOM_CACHE_REF")
    refused(b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00", "never sends")  # inf
    refused(b"\x83F\x7f\xf8\x00\x00\x00\x00\x00\x00", "never sends")  # nan
    refused(b"\x83M\x00\x00\x00\x01\x00\xff")
    refused(b"\x83M\x00\x00\x00\x01\x09\xff")
    refused(b"\x83qw\x01mw\x01fb\x00\x00\x00\x01", "arity")
    refused(b"\x83X" + b"a\x01" + b"\x00" * 12, "expected an atom")


def test_atoms_are_capped_and_checked() -> None:
    assert decode(b"\x83v\x00\xff" + b"a" * 255) == "a" * 255
    refused(b"\x83v\x01\x00" + b"a" * 256, "255")
    refused(b"\x83v\x00\x02\xc3\x28", "UTF-8")
    refused(b"\x83d\x01\x00" + b"a" * 256, "255")


def test_a_flood_of_distinct_atoms_leaves_the_caches_bounded() -> None:
    names = [f"atom_{n}" for n in range(20_000)]
    data = encode([Atom(name) for name in names])
    started = time.monotonic()
    assert decode(data) == names
    assert time.monotonic() - started < QUICK
    assert len(etf._TERM_ATOMS) <= etf._CACHE_LIMIT
    assert len(etf._ATOM_BYTES) <= etf._CACHE_LIMIT


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_either_decode_or_raise_a_decode_error(data: bytes) -> None:
    for candidate in (b"\x83" + data, b"p\x83" + data):
        try:
            decode(candidate)
            decode_dist_message(candidate)
        except TermDecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_terms_either_decode_or_raise_a_decode_error(data: st.DataObject) -> None:
    original = bytearray(encode((Atom("ping"), PID, REF, [1, "x", {1: 2.5}],
                                 ImproperList([1], 2), 2**70, BitBinary(b"\x80", 1))))
    for _ in range(data.draw(st.integers(1, 4))):
        original[data.draw(st.integers(1, len(original) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(original))
    except TermDecodeError:
        pass


# ---------------------------------------------------------------------------------------------
# Round trips through a real BEAM.

# Reads {packet, 4} requests on stdin, answers on stdout:
#   e Etf          -> o term_to_binary(binary_to_term(Etf), minor_version 2)
#   v Source       -> o term_to_binary(Value of Source, minor_version 2)
#   c N Source Etf -> o Same, then four length-prefixed encodings: the source's value with
#                     minor_version 2, minor_version 1 (Latin-1 atom tags), compressed,
#                     and binary_to_term(Etf) re-encoded. Same is 1 when Etf =:= the value.
#   anything failing -> x Reason
BEAM_SCRIPT = r"""
P = open_port({fd, 0, 1}, [{packet, 4}, binary, eof]),
Eval = fun(Src) ->
    {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Src)),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Value, _} = erl_eval:exprs(Exprs, []),
    Value
end,
Len = fun(B) -> [<<(byte_size(B)):32>>, B] end,
Handle = fun
    (<<$e, Etf/binary>>) -> term_to_binary(binary_to_term(Etf), [{minor_version, 2}]);
    (<<$v, Src/binary>>) -> term_to_binary(Eval(Src), [{minor_version, 2}]);
    (<<$c, N:32, Src:N/binary, Etf/binary>>) ->
        V = Eval(Src),
        U = binary_to_term(Etf),
        Same = case U =:= V of true -> 1; false -> 0 end,
        [Same, Len(term_to_binary(V, [{minor_version, 2}])), Len(term_to_binary(V)),
         Len(term_to_binary(V, [compressed])), Len(term_to_binary(U, [{minor_version, 2}]))]
end,
Loop = fun Loop() ->
    receive
        {P, {data, Request}} ->
            Reply = try [$o, Handle(Request)]
                    catch C:R -> [$x, unicode:characters_to_binary(io_lib:format("~tp", [{C, R}]))]
                    end,
            port_command(P, Reply),
            Loop();
        {P, eof} -> halt(0)
    end
end,
Loop().
"""


class Beam:
    """One ``erl`` that answers requests over its stdin and stdout; every read has a deadline."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["erl", "-noshell", "-noinput", "-eval", BEAM_SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)

    def request(self, payload: bytes, timeout: float = 10.0) -> bytes:
        assert self.process.stdin is not None
        self.process.stdin.write(struct.pack(">I", len(payload)) + payload)
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        size = struct.unpack(">I", self._read(4, deadline))[0]
        reply = self._read(size, deadline)
        if reply[:1] != b"o":
            raise AssertionError(f"the BEAM failed: {reply[1:].decode(errors='replace')}")
        return reply[1:]

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks = b""
        while len(chunks) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"no answer from the BEAM: {self.errors()}")
            chunk = os.read(fd, size - len(chunks))
            if not chunk:
                raise AssertionError(f"the BEAM exited: {self.errors()}")
            chunks += chunk
        return chunks

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def echo(self, data: bytes) -> bytes:
        return self.request(b"e" + data)

    def value(self, source: str) -> bytes:
        return self.request(b"v" + source.encode())

    def compare(self, source: str, data: bytes) -> tuple[bool, list[bytes]]:
        src = source.encode()
        reply = self.request(b"c" + struct.pack(">I", len(src)) + src + data)
        parts, pos = [], 1
        while pos < len(reply):
            size = struct.unpack_from(">I", reply, pos)[0]
            parts.append(reply[pos + 4:pos + 4 + size])
            pos += 4 + size
        return reply[0] == 1, parts

    def stop(self) -> None:
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()  # eof: the script halts
            self.process.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.stderr.close()


@pytest.fixture(scope="module")
def beam():
    if shutil.which("erl") is None:
        pytest.skip("erl is not installed (Debian: apt-get install erlang-base): "
                    "the round trips through a real BEAM need it")
    node = Beam()
    try:
        node.value("ok.")  # started and answering
        yield node
    finally:
        node.stop()


def erlang_source(value: object) -> str:
    """Erlang source text whose value is the term ``value`` stands for."""
    kind = type(value)
    if value is None:
        return "nil"
    if kind is bool:
        return "true" if value else "false"
    if kind is Atom:
        return f"binary_to_atom({_bin(value.encode())}, utf8)"
    if kind is int:
        return f"({value})"
    if kind is float:
        bits = struct.unpack(">Q", struct.pack(">d", value))[0]
        return f"(fun(<<F:64/float>>) -> F end)(<<{bits}:64>>)"
    if kind is str:
        return _bin(value.encode())
    if kind is bytes:
        return _bin(value)
    if kind is BitBinary:
        last = value.data[-1] >> (8 - value.bits)
        return "<<" + "".join(f"{b}," for b in value.data[:-1]) + f"{last}:{value.bits}>>"
    if kind is tuple:
        return "{" + ", ".join(map(erlang_source, value)) + "}"
    if kind is list:
        return "[" + ", ".join(map(erlang_source, value)) + "]"
    if kind is ImproperList:
        return ("[" + ", ".join(map(erlang_source, value.items)) + " | "
                + erlang_source(value.tail) + "]")
    if kind is dict:
        return "#{" + ", ".join(f"{erlang_source(k)} => {erlang_source(v)}"
                                for k, v in value.items()) + "}"
    if kind is Export:
        return (f"erlang:make_fun({erlang_source(value.module)}, "
                f"{erlang_source(value.function)}, {value.arity})")
    # Pids, references and ports have no literal: the BEAM reads our bytes for them.
    return f"binary_to_term({_bin(encode(value))})"


def _bin(data: bytes) -> str:
    return "<<" + ",".join(map(str, data)) + ">>"


def _has_multi_key_map(value: object) -> bool:
    kind = type(value)
    if kind is dict:
        return len(value) > 1 or any(map(_has_multi_key_map, [*value, *value.values()]))
    if kind in (list, tuple):
        return any(map(_has_multi_key_map, value))
    if kind is ImproperList:
        return any(map(_has_multi_key_map, [*value.items, value.tail]))
    return False


u32 = st.integers(0, 2**32 - 1)
nodes = st.sampled_from(["kate@localhost", "alex@host.example", "kätë@höst", "a@b"])
atom_text = st.text(st.characters(codec="utf-8"), max_size=255).filter(
    lambda text: text not in ("true", "false", "nil"))
leaves = st.one_of(
    atom_text.map(Atom),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.binary(max_size=20).map(lambda b: b"\xff" + b),  # never valid UTF-8: stays bytes
    st.builds(BitBinary, st.binary(min_size=1, max_size=6), st.integers(1, 7)),
    st.integers(),
    st.integers(-(2**3000), 2**3000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([None, True, False]),
    st.lists(st.integers(0, 255), max_size=10),  # charlists
    st.builds(Pid, nodes, u32, u32, u32),
    st.builds(Ref, nodes, st.lists(u32, min_size=1, max_size=5).map(tuple), u32),
    st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32),
    st.builds(Export, atom_text, atom_text, st.integers(0, 255)),
)
keys = st.one_of(atom_text.map(Atom), st.text(max_size=8), st.integers(),
                 st.tuples(st.integers(), atom_text.map(Atom)))
terms = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.builds(ImproperList, st.lists(inner, min_size=1, max_size=3),
                  inner.filter(lambda t: not isinstance(t, (list, ImproperList)))),
    ),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(term=terms)
def test_terms_round_trip_through_a_real_beam(beam: Beam, term: object) -> None:
    data = encode(term)
    same, (utf8, latin1, compressed, echoed) = beam.compare(erlang_source(term) + ".", data)
    assert same, f"the BEAM reads {data.hex()} as something else than {erlang_source(term)}"
    for encoded in (utf8, latin1, compressed, echoed):
        assert_same(decode(encoded), term)
    if not _has_multi_key_map(term):  # the BEAM orders a map's keys its own way
        assert data == utf8


@settings(max_examples=200, deadline=None)
@given(control=controls, message=st.one_of(st.just(NO_MESSAGE), terms))
def test_dist_frames_encode_and_decode_as_their_terms_one_by_one(control: tuple,
                                                                  message: object) -> None:
    body = encode_dist_message(control, message)
    assert body == b"p" + encode(control) + (b"" if message is NO_MESSAGE else encode(message))
    assert etf.encode_dist_frame(control, message) == struct.pack(">I", len(body)) + body
    decoded = decode_dist_message(body)
    assert_same(decoded, _dist_message_the_long_way(body))
    assert_same(decoded, (control, None if message is NO_MESSAGE else message))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(control=controls, message=terms)
def test_each_term_of_a_dist_frame_is_what_a_real_beam_reads_and_writes(
        beam: Beam, control: tuple, message: object) -> None:
    # The frame's two terms, cut where decode_from says each ends: the BEAM reads each and
    # writes it back byte for byte (a map of several keys aside: the BEAM orders its keys).
    body = encode_dist_message(control, message)
    _, end = decode_from(body, 1)
    for part, term in ((body[1:end], control), (body[end:], message)):
        echoed = beam.echo(part)
        assert_same(decode(echoed), term)
        if not _has_multi_key_map(term):
            assert echoed == part
    assert_same(decode_dist_message(b"p" + beam.echo(body[1:end]) + beam.echo(body[end:])),
                (control, message))


def test_what_only_the_beam_makes_comes_back_unchanged(beam: Beam) -> None:
    made = decode(beam.value(
        "{self(), make_ref(), hd(erlang:ports()), fun(X) -> X end, fun lists:map/2, "
        "alias(), <<1:3>>, 'ok', \"charlist\", <<\"bin\">>}."))
    pid, ref, port, fun, export, alias, bits, ok, charlist, binary = made
    assert type(pid) is Pid and pid.node == "nonode@nohost"
    assert type(ref) is Ref and len(ref.words) == 3 and type(alias) is Ref
    assert type(port) is Port and type(fun) is Fun and fun.arity == 1
    assert export == Export("lists", "map", 2)
    assert (bits, ok, charlist, binary) == (BitBinary(b"\x20", 3), Atom("ok"),
                                            list(b"charlist"), "bin")
    assert decode(beam.echo(encode(made))) == made
    assert beam.echo(encode(made)) == encode(made)


# --- frames of a BEAM link, read in batches -----------------------------------------------

def _beam_link_pair(**options):
    import socket as socket_module

    from nodelab.dist import beam_link as bl
    from nodelab.dist import erlang_handshake as eh

    a, b = socket_module.socketpair()
    peer = eh.HandshakeResult("kate@localhost", eh.DEFAULT_FLAGS, 3, eh.DEFAULT_FLAGS,
                              initiator=True)
    events: list = []
    downs: list[str] = []
    arrived = threading.Condition()

    def on_event(event) -> None:
        with arrived:
            events.append(event)
            arrived.notify_all()

    def on_down(reason: str) -> None:
        with arrived:
            downs.append(reason)
            arrived.notify_all()

    link = bl.BeamLink(a, peer, "py@localhost", 2, on_event=on_event, on_down=on_down,
                       **options).start()
    return link, b, events, downs, arrived


def test_beam_frames_split_and_batched_arrive_whole_and_in_order() -> None:
    """Many frames in one write, a frame cut at every byte, and ticks between them: the
    link's reader takes what each recv gives and hands over every event once, in order."""
    from nodelab.dist import beam_link as bl
    from nodelab.runtime.pids import Pid

    link, b, events, downs, arrived = _beam_link_pair()
    try:
        kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
        sent = [bl.Send(me, (Atom("m"), i, "x" * (i * 37 % 300)), kate) for i in range(200)]
        frames = [bl.encode_frame(event) for event in sent]
        b.sendall(b"".join(frames[:100]))  # a batch: many frames per recv
        cut = bl.TICK.join(frames[100:103])  # ticks between frames
        for i in range(len(cut)):  # then one byte per write
            b.sendall(cut[i : i + 1])
        big = bl.Send(me, "y" * 300_000, kate)  # larger than one recv
        b.sendall(b"".join(frames[103:]) + bl.encode_frame(big))
        with arrived:
            assert arrived.wait_for(lambda: len(events) == 201, timeout=30), len(events)
        assert events == sent + [big]
        assert downs == []
    finally:
        link.close()
        b.close()


def test_plain_sends_go_to_on_send_and_every_other_signal_to_on_event_in_order() -> None:
    """With ``on_send``, a SEND or SEND_SENDER to a pid skips the event (the reader's fast
    path); everything else, a traced send included, is still an event, in arrival order."""
    from nodelab.dist import beam_link as bl
    from nodelab.runtime.pids import Pid

    log: list = []  # both callbacks, in the order the reader calls them
    arrived = threading.Condition()

    def on_send(pid: Pid, message: object) -> None:
        with arrived:
            log.append(("send", pid, message))
            arrived.notify_all()

    link, b, events, downs, _ = _beam_link_pair(on_send=on_send)
    link.on_event = lambda event: on_send(None, event)  # type: ignore[arg-type]
    try:
        kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
        sent = []
        for i in range(60):
            kind = i % 4
            if kind == 0:
                sent.append(bl.Send(me, (Atom("m"), i), kate))  # SEND_SENDER
            elif kind == 1:  # the old SEND; nil is a message like any other
                sent.append(bl.Unknown((bl.SEND, Atom(""), me), None if i % 8 == 1 else [i]))
            elif kind == 2:
                sent.append(bl.Link(kate, me))
            else:
                sent.append(bl.Send(me, i, kate, token=Atom("trace")))  # SEND_SENDER_TT
        b.sendall(b"".join(bl.encode_frame(event) for event in sent))
        with arrived:
            assert arrived.wait_for(lambda: len(log) == 60, timeout=30), len(log)
        expected = []
        for event in sent:
            control, message = event.to_wire()
            if control[0] in (bl.SEND, bl.SEND_SENDER):
                expected.append(("send", me, message))
            else:
                expected.append(("send", None, event))
        assert log == expected
        assert events == [] and downs == []
    finally:
        link.close()
        b.close()


def test_a_beam_frame_claiming_too_many_bytes_closes_before_they_arrive() -> None:
    link, b, events, downs, arrived = _beam_link_pair(max_frame=1000)
    try:
        b.sendall(b"\x00\x00")  # half a length, then the rest: no body ever follows
        b.sendall(struct.pack("!I", 1001)[2:] + b"p")
        with arrived:
            assert arrived.wait_for(lambda: downs, timeout=30)
        assert downs == ["protocol_error"] and events == []
    finally:
        link.close()
        b.close()


def _read_frames(sock, count: int, timeout: float = 30.0) -> list[bytes]:
    """``count`` frames (ticks included) from ``sock``, each without its length."""
    sock.settimeout(timeout)
    data = bytearray()
    frames_read: list[bytes] = []
    offset = 0
    while len(frames_read) < count:
        while len(data) - offset >= 4:
            (length,) = struct.unpack_from("!I", data, offset)
            if len(data) - offset - 4 < length:
                break
            frames_read.append(bytes(data[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        if len(frames_read) < count:
            chunk = sock.recv(65536)
            assert chunk, f"the link closed after {len(frames_read)} frames"
            data += chunk
    return frames_read


def test_a_burst_to_a_beam_leaves_whole_and_in_order() -> None:
    """Frames sent back to back are written in batches by the link's flusher, in order."""
    from nodelab.dist import beam_link as bl
    from nodelab.runtime.pids import Pid

    link, b, events, downs, arrived = _beam_link_pair()
    received: list[bytes] = []
    kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
    sent = [bl.Send(kate, (Atom("m"), i, "x" * (i % 50)), me) for i in range(5000)]
    # The far end reads while the burst is written (a socket buffer holds less than it).
    reader = threading.Thread(target=lambda: received.extend(_read_frames(b, len(sent))))
    reader.start()
    try:
        for event in sent:
            link.send_event(event)
        reader.join(60)
        assert not reader.is_alive()
        assert [bl.decode_frame(body) for body in received] == sent
    finally:
        link.close()
        b.close()
        reader.join(10)


def test_a_close_right_after_a_burst_writes_the_burst_first() -> None:
    from nodelab.dist import beam_link as bl
    from nodelab.runtime.pids import Pid

    link, b, events, downs, arrived = _beam_link_pair()
    try:
        kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
        sent = [bl.Send(kate, (Atom("m"), i), me) for i in range(300)]  # fits a socket buffer
        for event in sent:
            link.send_event(event)
        link.close()  # never waits for the reader: it writes what the socket takes
        received = _read_frames(b, len(sent))
        assert [bl.decode_frame(body) for body in received] == sent
        b.settimeout(10)
        assert b.recv(1) == b""  # then the link is closed, nothing else was written
        with pytest.raises(OSError):
            link.send_event(sent[0])
        link.flusher.join(10)
        assert not link.flusher.is_alive()
    finally:
        link.close()
        b.close()


def test_a_close_never_waits_for_a_peer_that_does_not_read() -> None:
    from nodelab.dist import beam_link as bl
    from nodelab.runtime.pids import Pid

    link, b, events, downs, arrived = _beam_link_pair()
    try:
        kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
        blob = "z" * 60_000
        closer = None
        # Fill the socket (the far end never reads) from a sender thread, then close.
        sender = threading.Thread(target=lambda: _send_until_gone(link, bl.Send(kate, blob, me)),
                                  daemon=True)
        sender.start()
        time.sleep(0.5)
        closer = threading.Thread(target=link.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close() waited for the peer"
        sender.join(10)
        assert not sender.is_alive()
    finally:
        link.close()
        b.close()


def _send_until_gone(link, event) -> None:
    try:
        while True:
            link.send_event(event)
    except OSError:
        return


def test_a_beam_peers_sends_write_the_frames_of_their_events() -> None:
    """BeamPeer.send and send_named write their frames without building an event: the bytes
    are those of the events they stand for (SEND with no sender, REG_SEND), a call's tag
    included, for plain messages, the runtime's Erlang-spelled heads and atoms alike."""
    from nodelab.dist import beam_link as bl
    from nodelab.dist import beam_peer as bp
    from nodelab.runtime.pids import Pid, Ref

    link, b, events, downs, arrived = _beam_link_pair()
    peer = bp.BeamPeer.__new__(bp.BeamPeer)  # a BeamPeer around this link, no node needed
    peer.peer, peer.link, peer._aliases, peer._info_calls = "kate@localhost", link, {}, {}
    peer._heads = {}
    try:
        kate, me = Pid("kate@localhost", 5, 3), Pid("py@localhost", 7, 2)
        ref = Ref("py@localhost", (1, 2, 3), 2)
        messages = [(me, Atom("ping")), "text", None, ("m", 1), ("io_reply", ref, "ok"),
                    ("$gen_call", (me, ref), ("get", 1)), ("$gen_cast", "x"), [1, 2], ()]
        expected = []
        for i, message in enumerate(messages):
            link.last_send = 0.0  # every frame straight out: the test reads them in order
            if i % 2:
                name = "Chat.Server" if i % 4 == 1 else "echo"
                assert peer.send_named(name, message, me)
                expected.append(bl.RegSend(me, bp.beam_name(name), bp.erlang_message(message)))
            else:
                assert peer.send(kate, message)
                expected.append(bl.Unknown((bl.SEND, Atom(""), kate),
                                           bp.erlang_message(message)))
        got = _read_frames(b, len(messages))
        # The call went out as OTP 24+'s {caller, [alias | ref]}, and its alias is waiting.
        assert peer._aliases == {ref: me}
        tag = ImproperList([Atom("alias")], ref)
        expected[5] = bl.RegSend(me, Atom("Elixir.Chat.Server"),
                                 (Atom("$gen_call"), (me, tag), ("get", 1)))
        assert got == [bl.encode_frame(event)[4:] for event in expected]
        assert bp.beam_name("Chat.Server") == "Elixir.Chat.Server"
        assert type(bp.beam_name("echo")) is Atom and bp.beam_name("") == Atom("")
    finally:
        link.close()
        b.close()
