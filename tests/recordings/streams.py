"""Deterministic terminal byte streams for the screen tests and the terminal benchmark.

Each function returns the bytes a program would write to a 120x40 PTY (so lines end in CR LF, as the tty's
`onlcr` makes them). They are generated rather than committed because they are large and cheap to make;
the same arguments always give the same bytes. Captures of real programs live beside this file (*.bin,
made by capture.py).
"""

from __future__ import annotations

import random
from typing import Any

ESC = "\x1b"
CSI = ESC + "["

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "colony",
    "agent",
    "worktree",
    "commit",
    "rebase",
    "merge",
    "namespace",
    "socket",
    "tmux",
    "pyte",
    "screen",
    "scroll",
    "buffer",
    "render",
    "widget",
    "terminal",
    "cursor",
    "flood",
    "token",
    "stream",
    "parser",
    "escape",
    "sequence",
    "request",
    "response",
    "timeout",
    "retry",
    "cache",
    "index",
    "shard",
    "replica",
    "quorum",
    "leader",
    "follower",
]


def flood(count: int, start: int = 1) -> bytes:
    """`seq start start+count-1` as it arrives from a PTY."""
    return "".join(f"{i}\r\n" for i in range(start, start + count)).encode()


def agent_hints() -> bytes:
    """What coding agents draw in the SGR attributes pyte drops: Codex's and Claude Code's dim hints and secondary
    text (2, ended by 22, which also ends bold), a concealed word (8, 28), double underlines (21 and 4:2, ended by
    24 and 4:0), an overline (53, 55) and a curly underline (4:3, Claude Code's and Neovim's), each followed by
    text after its reset."""
    return (
        f"{CSI}1m• Ran{CSI}22m {CSI}2mcargo test{CSI}22m {CSI}1;2mbold-dim{CSI}22m normal\r\n"
        f"{CSI}2m  esc to interrupt · ctrl+t transcript{CSI}0m\r\n"
        f"{CSI}8msecret{CSI}28m shown {CSI}21mdouble{CSI}24m {CSI}4:2mcolon-double{CSI}4:0m {CSI}53mover{CSI}55m "
        f"{CSI}4:3mcurly{CSI}4:0m plain\r\n"
    ).encode()


# What `agent_hints` shows, word by word: (bold, dim, conceal, underscore, double underline, overline).
AGENT_HINTS_ATTRS = {
    "Ran": (True, False, False, False, False, False),
    "cargo test": (False, True, False, False, False, False),
    "bold-dim": (True, True, False, False, False, False),
    "normal": (False, False, False, False, False, False),
    "esc to interrupt": (False, True, False, False, False, False),
    "secret": (False, False, True, False, False, False),
    "shown": (False, False, False, False, False, False),
    "double": (False, False, False, False, True, False),
    "colon-double": (False, False, False, True, True, False),  # 4:2 is an underline to pyte too
    "over": (False, False, False, False, False, True),
    "curly": (False, False, False, True, False, False),
    "plain": (False, False, False, False, False, False),
}


def agent_hints_shown(rows: list[Any]) -> dict[str, set[tuple[bool, ...]]]:
    """For each word of `agent_hints` found in `rows` (rows of cells), the attributes of its cells, as in
    `AGENT_HINTS_ATTRS`."""
    found: dict[str, set[tuple[bool, ...]]] = {}
    for word in AGENT_HINTS_ATTRS:
        for cells in rows:
            at = "".join(cell.data for cell in cells).find(word)
            if at >= 0:
                found[word] = {
                    (c.bold, c.dim, c.conceal, c.underscore, c.double_underscore, c.overline)
                    for c in cells[at : at + len(word)]
                }
                break
    return found


def agent_hints_expected() -> dict[str, set[tuple[bool, ...]]]:
    return {word: {attrs} for word, attrs in AGENT_HINTS_ATTRS.items()}


def _sgr_random(rng: random.Random) -> str:
    """One SGR sequence from the whole palette pyte understands: 16, 256 and truecolour, every attribute."""
    kind = rng.randrange(10)
    if kind == 0:
        return CSI + "0m"
    if kind == 1:
        return CSI + "m"
    if kind == 2:
        return f"{CSI}{rng.choice([30, 31, 32, 33, 34, 35, 36, 37, 39, 90, 91, 92, 93, 94, 95, 96, 97])}m"
    if kind == 3:
        return f"{CSI}{rng.choice([40, 41, 42, 43, 44, 45, 46, 47, 49, 100, 101, 102, 103, 104, 105, 106, 107])}m"
    if kind == 4:
        return f"{CSI}38;5;{rng.randrange(256)}m"
    if kind == 5:
        return f"{CSI}48;5;{rng.randrange(256)}m"
    if kind == 6:
        return f"{CSI}38;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m"
    if kind == 7:
        return f"{CSI}48;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m"
    if kind == 8:
        return f"{CSI}{rng.choice([1, 3, 4, 5, 7, 9])}m"
    return f"{CSI}{rng.choice([22, 23, 24, 25, 27, 29])};{rng.choice([1, 4, 7, 31, 42])}m"


def colored_logs(count: int, seed: int = 1) -> bytes:
    """Log lines in colour: a timestamp, a coloured level, a module in 256 colours, a message with the odd
    truecolour or attribute span; some lines wrap, some leave attributes set for the next line."""
    rng = random.Random(seed)
    levels = [
        (CSI + "32m", "INFO "),
        (CSI + "33m", "WARN "),
        (CSI + "1;31m", "ERROR"),
        (CSI + "90m", "DEBUG"),
    ]
    out = []
    for i in range(count):
        colour, level = levels[rng.randrange(len(levels))]
        ts = f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7 % 1000:03d}Z"
        module = f"{CSI}38;5;{16 + i % 216}m{rng.choice(_WORDS)}.{rng.choice(_WORDS)}{CSI}0m"
        words = [rng.choice(_WORDS) for _ in range(rng.randrange(3, 30 if i % 17 else 40))]
        if rng.random() < 0.5:
            k = rng.randrange(len(words))
            words[k] = _sgr_random(rng) + words[k] + CSI + "0m"
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), f"{CSI}38;2;{i % 256};{i * 3 % 256};200m<rgb>{CSI}39m")
        tail = "" if rng.random() < 0.9 else _sgr_random(rng)  # attributes left on for the next line
        out.append(f"{CSI}2m{ts}{CSI}22m {colour}{level}{CSI}0m {module} {' '.join(words)}{tail}\r\n")
    out.append(CSI + "0m")
    return "".join(out).encode()


def fullscreen_redraw(frames: int, seed: int = 2) -> bytes:
    """A full-screen program repainting: home, then 40 cursor-addressed rows of coloured text, each ended
    with erase-to-end-of-line, and a status line in reverse video; the cursor parks on the status line."""
    rng = random.Random(seed)
    out = []
    for f in range(frames):
        out.append(CSI + "?25l" + CSI + "H")
        for y in range(39):
            cells = []
            width = 0
            while width < 100:
                word = rng.choice(_WORDS)
                cells.append(f"{CSI}38;5;{(y * 7 + f + width) % 256}m{word} ")
                width += len(word) + 1
            out.append(f"{CSI}{y + 1};1H{CSI}{1 if y % 2 else 22}m{''.join(cells)}{CSI}0m{CSI}K")
        out.append(f"{CSI}40;1H{CSI}7m frame {f:6d} {CSI}K{CSI}0m{CSI}40;20H{CSI}?25h")
    return "".join(out).encode()


def pane_flood(count: int, seed: int = 3) -> bytes:
    """`ls -l --color` in a terminal split in two as tmux splits it: a scroll region of the screen's lower half
    (rows 21-39, the status line below it), the lines written from its bottom row, each ended with EL (tmux clears
    a pane's row so), scrolling the region and not the screen; the region reset at the end."""
    rng = random.Random(seed)
    kinds = [
        ("-rw-r--r--", ""),
        ("-rwxr-xr-x", CSI + "1;32m"),
        ("drwxr-xr-x", CSI + "1;34m"),
        ("lrwxrwxrwx", CSI + "1;36m"),
    ]
    out = [CSI + "21;39r" + CSI + "39;1H"]
    for i in range(count):
        mode, colour = kinds[rng.randrange(len(kinds))]
        name = f"{rng.choice(_WORDS)}_{i}.{rng.choice(('py', 'txt', 'json', 'so'))}"
        shown = f"{colour}{name}{CSI}0m" if colour else name
        out.append(
            f"{mode}  1 root root {rng.randrange(1 << 20):8d} Nov {i % 28 + 1:2d} 12:{i % 60:02d} {shown}{CSI}K\r\n"
        )
    out.append(CSI + "r")
    return "".join(out).encode()


def cursor_movement() -> bytes:
    """Cursor addressing and editing: CUP/HVP, CUU/CUD/CUF/CUB/CNL/CPL/CHA/VPA/HPR/VPR (including zero
    and out-of-range counts), ED/EL in all forms with coloured backgrounds (pyte erases only cells that
    exist), DECSC/DECRC, DECSTBM regions scrolled by LF, IND and RI, IL/DL, ICH/DCH/ECH, DECOM, NEL, BS."""
    out = []
    for y in range(40):
        out.append(f"{CSI}{y + 1};1H{CSI}3{y % 8}mrow {y:02d} " + "abcdefghij" * (y % 12))
    out.append(CSI + "0m")
    out.append(f"{CSI}10;10Hhere{CSI}3Aup3{CSI}2Bdown2{CSI}5Cright5{CSI}7Dleft7{CSI}0Azero{CSI}99Bfloor")
    out.append(f"{CSI}1;1H{CSI}99Dclamp{CSI}999Cedge{CSI}2Enext2{CSI}Fprev{CSI}30Gcol30{CSI}12dline12")
    out.append(f"{CSI}5;5fhvp{CSI}4anine{CSI}3evpr3\bBS\b\bbs")
    out.append(f"{CSI}44m{CSI}20;50H{CSI}K{CSI}21;50H{CSI}1K{CSI}22;50H{CSI}2K{CSI}0m")
    out.append(f"{CSI}7;7H{ESC}7{CSI}1;33msaved{CSI}0m{CSI}30;3Hmoved{ESC}8after-restore")
    out.append(f"{CSI}41m{CSI}25;60H{CSI}J{CSI}0m")
    out.append(f"{CSI}42m{CSI}3;40H{CSI}1J{CSI}0m")
    out.append(f"{CSI}8;1H" + "".join(f"{CSI}{8 + i};1Hline {i} of the region" for i in range(12)))
    out.append(f"{CSI}8;19r")  # scroll region rows 8..19
    out.append(f"{CSI}19;1H" + "".join(f"scrolled in {i}\r\n" for i in range(6)))
    out.append(f"{CSI}8;1H{ESC}Mreverse-index-at-top{ESC}M{ESC}Mtwice")
    out.append(f"{CSI}19;1H{ESC}Dindex-at-bottom{ESC}D")
    out.append(f"{CSI}10;1H{CSI}3Linserted3{CSI}14;1H{CSI}2Mdeleted2{CSI}L{CSI}M")
    out.append(f"{CSI}?6h{CSI}1;1Horigin-home{CSI}3;3Horigin-3-3{CSI}?6l")
    out.append(f"{CSI}r{CSI}30;1H{CSI}45m")
    out.append(f"{CSI}30;10H{CSI}4@ins{CSI}31;10H{CSI}3Pdel{CSI}32;10H{CSI}5Xech{CSI}@{CSI}P{CSI}X")
    out.append(f"{CSI}0m{CSI}35;1Hnel{ESC}Enext-line{ESC}E\r\n")
    out.append(f"{CSI}2;1H{CSI}1;4;7mstyled{CSI}27;24mplain-bold{CSI}m")
    out.append(f"{CSI}38;5;208m{CSI}48;2;10;20;30m{CSI}36;1Hcolours{CSI}0m")
    out.append(f"{CSI}40;1H" + "".join(f"bottom {i}\r\n" for i in range(3)))  # scroll the whole screen
    out.append(f"{CSI}?25l{CSI}20;20H")
    return "".join(out).encode()


def clear_redraws(frames: int = 30) -> bytes:
    """`clear` then a screenful, repeatedly, with some frames only homing the cursor and overwriting."""
    out = []
    for f in range(frames):
        out.append(CSI + "H" + CSI + "2J" if f % 3 else CSI + "H")
        if f % 5 == 0:
            out.append(CSI + "3J")
        for y in range(40 if f % 2 else 25):
            out.append(f"{CSI}3{(f + y) % 8}mframe {f} row {y} " + "=" * ((f * 7 + y * 3) % 90))
            out.append(CSI + "0m")
            if y < 39:
                out.append("\r\n")
    out.append("\r\nprompt$ ")
    return "".join(out).encode()


def alternate_screen() -> bytes:
    """Main-screen output, then 1049 (save cursor, alternate, clear), a full-screen UI that scrolls, and
    back; the same with 1047 and 47; set twice and reset twice, as careless programs do."""
    out = ["".join(f"shell line {i}\r\n" for i in range(50)), "prompt$ vim file"]
    out.append(f"{CSI}31m{CSI}?1049h{CSI}H{CSI}2J")
    out.append("".join(f"{CSI}{y + 1};1H{CSI}3{y % 8}m~ editor row {y}" for y in range(40)))
    out.append(f"{CSI}40;1H" + "".join(f"alt scroll {i}\r\n" for i in range(45)))
    out.append(f"{CSI}?1049h{CSI}5;5Hstill alt")
    out.append(f"{CSI}?1049l{CSI}?1049l after-1049")
    out.append("\r\n" + f"{CSI}?1047hin 1047{CSI}10;10H{CSI}1m bold{CSI}?1047l back from 1047")
    out.append("\r\n" + f"{CSI}?47h{CSI}Hin 47\r\nline2{CSI}?47l back from 47")
    out.append(f"{CSI}?1049h{CSI}?25l{CSI}Halt, cursor hidden{CSI}?25h{CSI}?1049l\r\n")
    return "".join(out).encode()


def wide_and_combining() -> bytes:
    """CJK and emoji (two cells), combining accents (joined into the previous cell, also across a line
    start), wide characters at the right margin, overwriting halves of wide characters."""
    out = [f"中文 stubs{CSI}1;2HA{CSI}1;4HB\r\n"]  # stubs overwritten: pyte's display skips A and B
    out.append("中文字符测试 日本語のテキスト 한국어 텍스트\r\n")
    out.append("emoji: 😀 🎉 🚀 ✨ 👍 end\r\n")
    out.append("combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323 cafe\u0301\r\n")
    out.append("narrow non-ASCII: é ü ñ ─│┌┐└┘ ±\u00d7÷ αβγ\r\n")
    out.append("x" * 119 + "中" + "after\r\n")  # wide character does not fit in the last column
    out.append("y" * 118 + "中" + "z\r\n")  # wide character exactly fills the line
    out.append("中" * 70 + "\r\n")  # wraps in the middle of a run of wide characters
    out.append(f"{CSI}20;1H中文中文{CSI}20;2HA{CSI}20;5HB")  # overwrite stub and first half
    out.append(f"{CSI}21;120H\u0301{CSI}22;1H\u0301start")  # combining at the edge and at column 0
    out.append(f"{CSI}23;1H{CSI}1;35m粗体紫色 bold{CSI}0m\r\n")
    out.append("x" * 120 + "\u0301next\r\n")  # combining after a pending wrap joins the last cell
    out.append("w" * 120 + "\u0301\r\nafter a combining mark at the pending wrap\r\n")  # which it does not take
    # Emoji as agents print them: VS16 and ZWJ join the character before them, and the rest of the text is drawn
    out.append("⚠️ warning ✔️ done 👨\u200d💻 dev 🇨🇳 flag 👍🏽 tone a\u200bb zwsp 中\u0301 end\r\n")
    out.append("v" * 119 + "⚠️ at the edge\r\n")
    out.append("u" * 118 + "👨\u200d💻 wide at the edge\r\n")
    out.append(f"{CSI}4hinsert ⚠️ mode 👨\u200d💻{CSI}4l\r\n")
    out.append(f"{CSI}35mmagenta left on\r\ncombined e\u0301 stays magenta\r\n{CSI}0m")  # one line batch
    out.append(f"{CSI}1;31m中文 bold red, 中文 wide\r\n{CSI}4m" + "全角" * 31 + f"\r\n{CSI}0m")
    for i in range(45):
        out.append(f"scroll {i} 中文 ✓ é\r\n")
    return "".join(out).encode()


def tabs() -> bytes:
    """Default tab stops, tabs past the last stop, HTS to set and TBC to clear one and all."""
    out = ["a\tb\tc\td\te\tf\tg\th\ti\tj\tk\tl\tm\tn\to\tp\tend\r\n"]
    out.append("\t" * 20 + "far\r\n")
    out.append(f"{CSI}5G{ESC}H{CSI}13G{ESC}H\r\tat5?\t\r\n")
    out.append(f"{CSI}9G{CSI}g\r\ttab\r\n")
    out.append(f"{CSI}3g\r\tno stops\r\n")
    out.append("col\ttabs\tin\ta\tlog\tline\r\n" * 5)
    return "".join(out).encode()


def autowrap() -> bytes:
    """DECAWM on: long lines wrap (also exactly 120 and 240 characters, and a pending wrap cancelled by
    CR). DECAWM off: the last column is overwritten. Then on again."""
    out = []
    out.append("A" * 120 + "\r\n")
    out.append("B" * 121 + "\r\n")
    out.append("C" * 240 + "\r\n")
    out.append("D" * 300 + "\r\n")
    out.append("E" * 120 + "\rcr-after-pending-wrap\r\n")
    out.append("F" * 120 + f"{CSI}Kel-at-pending{CSI}1K\r\n")
    out.append(f"{CSI}?7l" + "G" * 130 + "|last\r\n" + "H" * 119 + "中\r\n")
    out.append(f"{CSI}?7h" + "I" * 125 + "\r\n")
    # coloured text crossing the right margin by 0, 1 and 2 cells, from column 1 and from column 100,
    # not followed by CR LF (so not a line batch)
    for k, width in enumerate((119, 120, 121, 122)):
        out.append(f"{CSI}{10 + k};1H{CSI}3{k}m" + "s" * (width - 5) + f"{CSI}1m" + "t" * 5 + f"{CSI}0m{CSI}K")
        out.append(f"{CSI}{20 + k};100H{CSI}4{k}m" + "u" * (width - 99) + f"{CSI}0mv{CSI}K")
    out.append(f"{CSI}30;1H")
    for i in range(60):
        out.append(f"{CSI}3{i % 8}m" + f"wrapped line {i:03d} " * 9 + f"{CSI}0m\r\n")
    out.append("no newline at the end " * 9)
    return "".join(out).encode()


_FUZZ_TEXT = ["hello", "x", " ", "中文", "é", "a\u0301", "─", "😀", "0123456789" * 13, "word " * 30]
# What agents print beyond that: VS16 ("⚠️"), ZWJ sequences, flags (regional indicators), a zero-width space, a
# combining mark after a wide character, a skin tone.
_FUZZ_TEXT += [
    "⚠️ warn",
    "\U0001f468\u200d\U0001f4bb dev",
    "\U0001f1e8\U0001f1f3",
    "a\u200bb",
    "中\u0301",
    "\U0001f44d\U0001f3fd",
]


# Sequences real programs send that stock pyte misreads: the kitty keyboard protocol (push, pop, set: Codex,
# Claude Code, Textual), XTMODKEYS (vim), DA3, cursor style, DECSCL, XTPUSHSGR, DECRQM, SGR with colon
# sub-parameters (truecolour, 256 colours, curly and no underline, underline colour), and control strings (vim's
# DCS probe, XTGETTCAP, kitty graphics, PM, SOS).
_XTERM_ONLY = [
    f"{CSI}>1u",
    f"{CSI}<u",
    f"{CSI}<1u",
    f"{CSI}=5;1u",
    f"{CSI}>4;1m",
    f"{CSI}=c",
    f"{CSI}2 q",
    f'{CSI}61;1"p',
    f"{CSI}#{{",
    f"{CSI}?2026$p",
    f"{CSI}38:2::255:128:0m",
    f"{CSI}48:2:0:64:255m",
    f"{CSI}1;38:5:196;4:3m",
    f"{CSI}4:0m",
    f"{CSI}58:2::255:0:0m",
    f"{ESC}Pzz{ESC}\\{CSI}0%m",
    f"{ESC}P+q544e{ESC}\\",
    f"{ESC}_Gf=100,a=T;{'QUFB' * 300}{ESC}\\",
    f"{ESC}^pm{ESC}\\{ESC}Xsos\x9c",
    f"{ESC}Pabc",  # aborted by what follows
    f"{CSI}?1048hsaved{CSI}?1048l",
    f"{CSI}?3h",
    f"{CSI}!p{CSI}?3;4l{CSI}4l{ESC}>",  # xterm-256color's reset string
]


def fuzz(seed: int, count: int = 400) -> bytes:
    """Random mixes of text, controls and sequences, biased to the fast paths' edges (line batches meeting
    escapes, wraps, scroll regions, insert mode, DECAWM off, the alternate screen). Avoids sequences on
    which stock pyte raises (e.g. VPA with DECOM and no margins)."""
    rng = random.Random(seed)
    out = []
    margins = False
    for _ in range(count):
        k = rng.randrange(25)
        if k < 6:
            out.append(rng.choice(_FUZZ_TEXT))
        elif k < 9:
            out.append("".join(f"{rng.choice(_WORDS)} {i}\r\n" for i in range(rng.randrange(1, 60))))
        elif k == 9:
            out.append(rng.choice(["\r\n", "\n", "\r", "\t", "\b", "\x07", "\x0b", "\x00"]))
        elif k == 10:
            out.append(_sgr_random(rng))
        elif k == 11:
            out.append(f"{CSI}{rng.randrange(0, 45)};{rng.randrange(0, 130)}H")
        elif k == 12:
            out.append(f"{CSI}{rng.choice('ABCDEFGdaeP@XLM')}")
        elif k == 13:
            out.append(f"{CSI}{rng.randrange(0, 50)}{rng.choice('ABCDEFGdaeP@XLM')}")
        elif k == 14:
            out.append(f"{CSI}{rng.choice(['', '0', '1', '2'])}{rng.choice('JK')}")
        elif k == 15:
            if margins or rng.random() < 0.5:
                out.append(f"{CSI}r")
                margins = False
            else:
                top = rng.randrange(1, 30)
                out.append(f"{CSI}{top};{top + rng.randrange(2, 12)}r")
                margins = True
        elif k == 16:
            out.append(rng.choice([f"{ESC}D", f"{ESC}M", f"{ESC}E", f"{ESC}7", f"{ESC}8"]))
        elif k == 17:
            # insert mode is short-lived: pyte's insert_characters costs a whole row per character
            out.append(rng.choice([f"{CSI}?7l", f"{CSI}?7h", f"{CSI}4hins{CSI}4l", f"{CSI}4h中{CSI}4l"]))
        elif k == 18:
            out.append(rng.choice([f"{CSI}?1049h", f"{CSI}?1049l", f"{CSI}?47h", f"{CSI}?47l"]))
        elif k == 19:
            out.append(rng.choice([f"{CSI}?25l", f"{CSI}?25h", f"{ESC}]0;title {rng.random():.3f}\x07"]))
        elif k == 20:
            # a coloured batch whose lines sometimes wrap
            for _ in range(rng.randrange(1, 40)):
                out.append(_sgr_random(rng) + rng.choice(_WORDS) * rng.randrange(1, 30) + "\r\n")
        elif k == 21:
            out.append(f"{CSI}{rng.randrange(1, 41)};1H")
        elif k == 22:
            out.append(rng.choice([f"{CSI}1;31m", f"{CSI}?4m", f"{CSI}>4;2m", f"{ESC}P", f"{CSI}>c", f"{CSI}!p"]))
            # sequences pyte's parser cuts short (a leader, colons, intermediates), as xterm takes them
            out.append(rng.choice(_XTERM_ONLY))
        elif k == 23:
            out.append(f"{ESC}(B{ESC}(0{CSI}?1h{CSI}?2004h{CSI}?1l{CSI}?2004l")
        else:
            # modes that switch fast paths off: reverse screen, new-line mode; and explicit full margins,
            # which must not
            out.append(rng.choice([f"{CSI}?5h", f"{CSI}?5l", f"{CSI}20h", f"{CSI}20l", f"{CSI}1;40r"]))
            margins = False
    return "".join(out).encode()


def styled_runs() -> bytes:
    """Runs of text and SGR drawn at cursor-addressed positions, the fast path of full-screen programs: runs
    ending exactly at the right margin and one cell past it, SGR only after a pending wrap, resets in the
    middle, the same words under many attributes (so cached cells are reused) and long unique text, narrow
    non-ASCII and wide characters, EL with a coloured background; then the same under DECAWM off, insert
    mode and a reversed screen (DECSCNM), where the fast path must stand aside."""
    words = ["ab", "word ", "x", "", "─é ", "long unique text " * 3]
    out = []
    for y in range(38):
        x = 1 + (y * 37) % 110
        cells = []
        for i in range(6 + y % 5):
            cells.append(f"{CSI}{31 + (y + i) % 7}m{words[(y + i) % len(words)]}")
            if i % 3 == 2:
                cells.append(f"{CSI}0m{CSI}1;4m")  # a reset and attributes mid-run
        out.append(f"{CSI}{y + 1};{x}H{''.join(cells)}{CSI}4{y % 8}m{CSI}K{CSI}0m")
    # exactly to the margin (pending wrap), then only SGR, then text that wraps
    out.append(f"{CSI}5;111H{CSI}32mfive{CSI}1m-six{CSI}33m{CSI}0m{CSI}35mwrapped")
    out.append(f"{CSI}6;111H{CSI}32mfive{CSI}1m-sixx{CSI}0m")  # one cell past the margin
    out.append(f"{CSI}7;119H{CSI}36m中{CSI}0m{CSI}7;1H{CSI}36mab中cd{CSI}0m")  # wide: not the fast path
    out.append(f"{CSI}8;117H{CSI}33m{CSI}44m{CSI}7mrev{CSI}27m")  # fills the last three cells
    out.append(f"{CSI}8;120H{CSI}m{CSI}31m")  # SGR only at the last column
    out.append(f"{CSI}?7l{CSI}9;110H{CSI}31mno autowrap {CSI}1mover the edge{CSI}0m{CSI}?7h")
    out.append(f"{CSI}10;5H{CSI}4h{CSI}32minserted {CSI}1mbold{CSI}0m{CSI}4l")
    out.append(f"{CSI}?5h{CSI}11;3H{CSI}31mreversed {CSI}0mscreen {CSI}mreset{CSI}?5l")
    out.append(f"{CSI}12;1H{CSI}38;2;1;2;3mtrue{CSI}48;5;200mcolour{CSI}22;24m{CSI}K")
    out.append(f"{CSI}40;1H{CSI}7m status {CSI}K{CSI}0m{CSI}40;20H")
    return "".join(out).encode()


_TUI_TEXT = ["ok", " idle     ", "colony-07 ", "━" * 17, "╺━━", "│", "中文", "😀", "é", "a\u0301", "x" * 130, " " * 40]


def _sgr_tui(rng: random.Random) -> str:
    """SGR as full-screen programs send it: resets, truecolour foreground and background in one sequence,
    attributes with colours, ncurses' ESC ( B before a reset, and the odd parameter pyte skips."""
    kind = rng.randrange(8)
    rgb = f"{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}"
    if kind == 0:
        return CSI + "0m"
    if kind == 1:
        return f"{CSI}38;2;{rgb};48;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m"
    if kind == 2:
        return f"{CSI}{rng.choice(['1;', '7;', '3;4;', ''])}38;2;{rgb}m"
    if kind == 3:
        return f"{ESC}(B{CSI}m{CSI}39;49m"
    if kind == 4:
        return f"{CSI}38;5;{rng.randrange(256)}m"
    if kind == 5:
        return rng.choice(
            [f"{CSI}38;5;300m", f"{CSI}38;2;1;2m", f"{CSI}48;5m", f"{CSI}1;38;2;9;9;9;22m"]
            # The attributes pyte drops (Codex and Claude Code draw hints dim), their resets, colour arguments that
            # are not attributes
            + [f"{CSI}2m", f"{CSI}2;38;2;{rgb}m", f"{CSI}22;53m", f"{CSI}8;21m", f"{CSI}4:2m", f"{CSI}24;28;55m"]
            + [f"{CSI}21;4m", f"{CSI}38;5;2;48;2;8;21;53m", f"{CSI}1;2;8;21;53m"]
            # Underline colours (Neovim's diagnostics), whose parameters are no attributes: 0s, 2s, 4s, 5s
            + [f"{CSI}4:3;58:2::{rgb.replace(';', ':')}m", f"{CSI}58;2;{rgb}m", f"{CSI}58;5;{rng.randrange(9)};1m"]
            + [f"{CSI}58:5:2m", f"{CSI}59m", f"{CSI}38;5;58;58;2;0;2;4;24m"]
        )
    return _sgr_random(rng)


def _tui_run(rng: random.Random) -> str:
    return "".join(
        (_sgr_tui(rng) if rng.random() < 0.7 else "") + rng.choice(_TUI_TEXT) for _ in range(rng.randrange(1, 6))
    )


def fuzz_tui(seed: int, count: int = 300) -> bytes:
    """Random full-screen output: cursor-addressed runs of truecolour text with EL (as Textual and ncurses paint
    rows), also at and past the right margin and with autowrap off; rows of lines ended by EL and CR LF (top);
    erase-and-up redraws (rich Live); scrolling batches whose EL paints a background; CUP parameters out of range;
    origin mode in a scroll region; the alternate screen; runs placed as ncurses places them (CHA, VPA, CUF, line
    drawing designated around them)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = rng.randrange(23)
        if k == 22:
            # ncurses: a run placed by CHA, VPA or CUF (perhaps after CR LF, out of range, in origin mode in a scroll
            # region), with line drawing designated in and around it, then perhaps EL
            n = rng.choice(["", "0", "1", str(rng.randrange(1, 45)), str(rng.randrange(118, 130))])
            a = rng.randrange(100, 121)
            move = rng.choice([f"{CSI}{n}{rng.choice('GdC')}", f"{CSI}{a}G{CSI}{120 - a + rng.randrange(-1, 3)}C"])
            run = rng.choice(["", f"{ESC}(0"]) + _tui_run(rng) + rng.choice(["", f"{ESC}(B", f"{ESC}(0x{ESC}(B"])
            paint = rng.choice(["", "\r\n"]) + move + run + rng.choice(["", f"{CSI}K", f"{CSI}2K"])
            if rng.random() < 0.3:
                top, height = rng.randrange(1, 30), rng.randrange(2, 10)
                moves = f"{CSI}{rng.randrange(1, height + 3)}d{run}\r\n{move}{run}"
                paint = f"{CSI}{top};{top + height}r{CSI}?6h{moves}{CSI}?6l{CSI}r"
            out.append(paint)
        elif k == 19:
            # top's frames: home, then rows ended by CR LF (EL on some, empty ones, SGR alone) that do not scroll,
            # painted again before anyone looks
            for _ in range(rng.randrange(1, 4)):
                rows = [
                    rng.choice(["", f"{CSI}K", f"{CSI}31m", _tui_run(rng) + f"{ESC}(B{CSI}m{CSI}K", _tui_run(rng)])
                    for _ in range(rng.randrange(1, 39))
                ]
                out.append(f"{CSI}H" + "\r\n".join(rows))
        elif k == 20:
            # lines wider than the screen in a batch: a wide character in the last column, lines of many reads
            line = rng.choice(["x" * 119 + "中文" + _tui_run(rng), "é" * 118 + "中" * 3, "中" * 61, "word " * 1500])
            out.append(line + rng.choice(["", f"{CSI}K", f"{CSI}44m{CSI}K"]) + "\r\n" + _tui_run(rng) + "\r\n")
        elif k == 21:
            # EL after a run, to its right or the whole row, also at the pending wrap, then more on the row
            cup = f"{CSI}{rng.randrange(1, 41)};{rng.choice(['1', '60', '120'])}H"
            out.append(
                cup + _tui_run(rng) + rng.choice([f"{CSI}K", f"{CSI}2K", f"{CSI}0K", f"{CSI}1K"]) + _tui_run(rng)
            )
        elif k >= 16:
            # rows painted again and again, then edited or read by what is not a paint (deferred paints are
            # written first): insert/delete lines and characters, scrolls, index/reverse index, DECALN, save/restore
            y = rng.randrange(1, 41)
            out.append(
                "".join(
                    f"{CSI}{y};{rng.choice(['1', '', str(rng.randrange(1, 121))])}H"
                    + _tui_run(rng)
                    + rng.choice(["", f"{CSI}K"])
                    for _ in range(rng.randrange(1, 6))
                )
            )
            out.append(
                rng.choice(
                    [
                        f"{CSI}{rng.randrange(0, 4)}L",
                        f"{CSI}{rng.randrange(0, 4)}M",
                        f"{CSI}3@",
                        f"{CSI}2P",
                        f"{CSI}5X",
                        f"\r{CSI}{rng.choice(['', '0', '7', '119', '120', '200'])}X",
                        f"{CSI}2S",
                        f"{CSI}T",
                        f"{ESC}M",
                        f"{ESC}D",
                        f"{ESC}E",
                        f"{ESC}#8",
                        f"{ESC}7{CSI}5;5Hsaved{ESC}8",
                        f"{CSI}?5h",
                        f"{CSI}?5l",
                        "x",
                        "",
                    ]
                )
            )
        elif k < 5:
            row = rng.choice(["", "0", "1", str(rng.randrange(1, 42)), "99999"])
            col = rng.choice([None, "", "1", str(rng.randrange(1, 125)), "120"])
            cup = f"{CSI}{row}H" if col is None else f"{CSI}{row};{col}H"
            out.append(cup + _tui_run(rng) + rng.choice(["", f"{CSI}K", f"{CSI}0K", f"{CSI}1K", f"{CSI}2K"]))
        elif k < 7:
            lines = [
                _tui_run(rng) + rng.choice(["", f"{CSI}K", f"{ESC}(B{CSI}m{CSI}K"]) for _ in range(rng.randrange(1, 50))
            ]
            out.append("\r\n".join(lines) + rng.choice(["\r\n", ""]))
        elif k == 7:
            region = rng.choice(
                ["", "", f"{CSI}{rng.randrange(1, 20)};{rng.randrange(21, 40)}r{CSI}{rng.randrange(1, 41)};1H"]
            )
            out.append(
                region + "\r" + f"{CSI}2K{CSI}1A" * rng.randrange(1, 9) + f"{CSI}2K" + (f"{CSI}r" if region else "")
            )
        elif k == 8:
            out.append(rng.choice([f"{CSI}?7l", f"{CSI}?7h", f"{CSI}?7h"]))
        elif k == 9:
            out.append(f"{CSI}{rng.randrange(1, 41)};1H")
        elif k == 10:
            # a scrolling batch whose EL paints a background on lines that leave the screen unseen
            out.append(
                f"{CSI}40;1H" + "".join(f"{CSI}4{i % 8}mline {i}{CSI}K\r\n" for i in range(rng.randrange(1, 90)))
            )
            out.append(CSI + "0m")
        elif k == 11:
            top = rng.randrange(1, 30)
            out.append(f"{CSI}{top};{top + rng.randrange(2, 10)}r{CSI}?6h{CSI}2;3H{_tui_run(rng)}{CSI}?6l{CSI}r")
        elif k == 12:
            out.append(rng.choice([f"{CSI}?1049h", f"{CSI}?1049l", f"{CSI}?2026h", f"{CSI}?2026l", f"{CSI}?25l"]))
        elif k == 13:
            out.append(rng.choice(["\r\n", "\n", "\r", "\b", "\t", f"{CSI}H{CSI}2J", f"{CSI}J"]))
        elif k == 14:
            out.append(rng.choice([f"{CSI}4hins{CSI}4l", f"{CSI}?5h{_tui_run(rng)}{CSI}?5l", f"{ESC}(0lqk{ESC}(B"]))
        else:
            out.append(_tui_run(rng))
    return "".join(out).encode()


def flood_with_controls(seed: int, count: int = 1500, colour: bool = True) -> bytes:
    """A flood of lines (some wrapping; coloured, or with no sequence at all) with, here and there, a line a batch
    does not take: a tab, BS, BEL or DEL, a lone CR or LF; and if coloured, EL or ESC ( B inside the line, a move, a
    CR LF cut by SGR, a cut sequence."""
    rng = random.Random(seed)
    odd = ["a\tb", "back\bspace", "bell\x07", "del\x7f", "lone\rcr", "lone\nlf"]
    if colour:
        odd += [
            f"mid{CSI}Kline",
            f"{CSI}0Kfirst",
            f"{ESC}(Bdesignated",
            f"{CSI}{rng.randrange(1, 41)};5Hmoved",
            f"{CSI}2Kall",
            f"cut\r{CSI}31m\nlf",
            f"{CSI}3{CSI}1mm",
            f"{ESC}7saved{ESC}8",
            f"{CSI}1;2m{CSI}K",
        ]
    lines = []
    for i in range(count):
        line = f"{_sgr_random(rng)}{i}{CSI}0m " if colour and rng.random() < 0.8 else f"{i} "
        line += " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(0, 30)))
        if rng.random() < 0.05:
            line += rng.choice(odd) + (f"{CSI}1mtail" if colour else "tail")
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode()


def placed_run(rng: random.Random) -> bytes:
    """One run placed as ncurses places runs, after a run painted somewhere: by CHA, VPA, CUF or CUP (perhaps after
    CR LF), to and past the margins, in origin mode in a scroll region or with autowrap off, with line drawing
    designated in and around it, then perhaps EL."""
    out = [f"{CSI}{rng.randrange(1, 41)};{rng.randrange(1, 121)}H", _tui_run(rng)]
    edges = [39, 40, 41, 119, 120, 121]  # the last row and column, and one past each
    if rng.random() < 0.3:
        top, height = rng.randrange(1, 30), rng.randrange(2, 10)
        out.append(f"{CSI}{top};{top + height}r{CSI}?6h")
        edges = [height, height + 1, height + 2]  # the region's last row, and past it
    if rng.random() < 0.2:
        out.append(f"{CSI}?7l")
    n = rng.choice(["", "0", "1", "2", str(rng.randrange(1, 45)), str(rng.choice(edges)), str(rng.choice(edges))])
    out.append(rng.choice(["", "", "\r\n"]))
    out.append(
        rng.choice(
            [
                f"{CSI}{n}G",
                f"{CSI}{n}d",
                f"{CSI}{n}C",
                f"{CSI}{n};{rng.choice(['', '1', str(rng.randrange(1, 125))])}H",
                f"{CSI}{rng.randrange(100, 122)}G{CSI}{rng.randrange(0, 22)}C",
            ]
        )
    )
    out.append(rng.choice(["", f"{ESC}(0"]) + _tui_run(rng) + rng.choice(["", f"{ESC}(B", f"{ESC}(0x{ESC}(B"]))
    out.append(rng.choice(["", f"{CSI}K", f"{CSI}0K", f"{CSI}2K"]))
    return "".join(out).encode()


def wide_wrapping_lines(count: int = 120) -> bytes:
    """Lines wider than the screen with wide characters, as a batch: a wide character landing in the last column
    (pyte drops its stub there and the next row starts after it), lines of wide characters alone, EL with a
    background after them; enough to scroll most away unseen."""
    out = []
    for i in range(count):
        k = i % 4
        if k == 0:
            out.append(f"{CSI}3{i % 8}m" + "x" * 119 + f"中文{CSI}0m {i}\r\n")
        elif k == 1:
            out.append("中" * (60 + i % 3) + f"{CSI}44m{CSI}K{CSI}0m\r\n")
        elif k == 2:
            out.append("é" * 118 + f"{CSI}1m中中{CSI}22m 中 {i}\r\n")
        else:
            out.append(f"narrow {i}\r\n")
    return "".join(out).encode()


def erased_lines(count: int = 300) -> bytes:
    """Scrolling lines ended by EL (as top and ncurses programs end them): with a background left on, so that the
    erased cells show it, also on lines that leave the screen before they are drawn; with the background reset
    first, so that EL erases to blanks; lines that wrap before their EL; ncurses' ESC ( B."""
    out = []
    for i in range(count):
        k = i // 60 % 5  # blocks of one kind, longer than the screen: a batch scrolls lines away unseen
        if k == 0:
            out.append(f"{CSI}4{i % 8}mbackground {i}{CSI}K\r\n{CSI}0m")
        elif k == 1:
            out.append(f"{CSI}3{i % 8}mreset first {i}{CSI}0m{CSI}K\r\n")
        elif k == 2:
            out.append(f"{CSI}44m" + f"wraps {i} " * 20 + f"{CSI}K{CSI}0m\r\n")
        elif k == 3:
            out.append(f"{ESC}(B{CSI}m{CSI}1m{i:6d} root{ESC}(B{CSI}m{CSI}39;49m{CSI}K\r\n")
        else:
            out.append(f"{CSI}48;2;{i % 256};40;40mtruecolour background {i}{CSI}0K\r\n")
    out.append(CSI + "0m")
    return "".join(out).encode()


def repeated_lines(seed: int, count: int = 120) -> bytes:
    """Batches of lines drawn from a small pool, so most are met again, as top repaints its rows frame to frame:
    from home or further down, so that some scroll; lines that leave attributes set for the next (a line met again
    from other attributes), EL after a run or with a background, wide, zero-width and unprintable characters,
    lines wider than the screen, SGR alone, empty lines; cut anywhere by the reads."""
    rng = random.Random(seed)
    tails = ["", f"{CSI}K", f"{ESC}(B{CSI}m{CSI}K", f"{CSI}4{rng.randrange(8)}m{CSI}K", f"{CSI}0K"]
    pool = [_tui_run(rng) + rng.choice(tails) for _ in range(10)]
    pool += [
        "",
        f"{CSI}K",
        f"{CSI}31m",
        f"{CSI}1mbold left on",
        f"{CSI}0mreset first{CSI}K",
        "中文 wide",
        "e\u0301 combining",
        "x" * 119 + "中",
        "word " * 30 + f"{CSI}K",
        f"{CSI}7m" + "y" * 130 + f"{CSI}44m{CSI}K",
        "tab\there",
    ]
    out = []
    for _ in range(count):
        lines = [rng.choice(pool) for _ in range(rng.randrange(1, 45))]
        start = rng.choice([f"{CSI}H", f"{CSI}H", f"{CSI}{rng.randrange(1, 41)};1H", "", f"{CSI}0m", f"{CSI}45m"])
        out.append(start + "\r\n".join(lines) + rng.choice(["\r\n", "\r\n", ""]))
    return "".join(out).encode()


def reset_lines(seed: int, count: int = 400) -> bytes:
    """A flood of lines whose attributes are followed only from each line's last reset: resets (ESC [ 0 m, ESC [ m,
    and ones written otherwise: 00, 0;1) at the start, middle and end of lines or nowhere, attributes left on after
    the last reset or carried over lines without one, EL with a background, ESC ( B, lines wider than the screen, SGR
    alone, empty lines; cut anywhere by the reads."""
    rng = random.Random(seed)
    resets = [f"{CSI}0m", f"{CSI}m", f"{CSI}00m", f"{CSI}0;1m", f"{ESC}(B{CSI}m"]
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randrange(0, 6)):
            kind = rng.randrange(4)
            if kind == 0:
                parts.append(rng.choice(resets))
            elif kind == 1:
                parts.append(_sgr_random(rng))
            else:
                parts.append(rng.choice(_WORDS) * rng.choice([1, 1, 1, 9]))
        line = "".join(parts)
        end = rng.choice(["", "", "", f"{CSI}K", f"{CSI}4{rng.randrange(8)}m{CSI}K", f"{CSI}0m{CSI}0K"])
        out.append(line + end + "\r\n")
    return "".join(out).encode()


def wrapping_flood(seed: int, count: int = 600) -> bytes:
    """A flood of lines most of which scroll away inside a batch, as `git log -p` makes: lines wider than the screen
    (ASCII, narrow non-ASCII, or with wide characters; the same line often twice in a row), lines starting from the
    attributes the line before left on or from a reset, pieces that start after an SGR, empty lines."""
    rng = random.Random(seed)
    texts = ["x", "é", "─", "中", "ab", "━│"]
    out = []
    line = ""
    for _ in range(count):
        if not line or rng.random() < 0.6:  # the line before, again
            parts = []
            for _ in range(rng.randrange(0, 5)):
                if rng.random() < 0.4:
                    parts.append(rng.choice([f"{CSI}m", f"{CSI}32m", f"{CSI}1m", f"{CSI}33m", _sgr_random(rng)]))
                else:
                    parts.append(rng.choice(texts) * rng.choice([1, 7, 60, 119, 130, 250]))
            line = "".join(parts) + rng.choice(["", f"{CSI}m", f"{CSI}m", f"{CSI}31m"])
        out.append(line + "\r\n")
    return "".join(out).encode()


def pager_pages(seed: int, count: int = 60, main: bool = False) -> bytes:
    """Pages of lines with a prompt between them, as less and man page forward: the prompt drawn on the row after
    the page (less's status line in reverse video turned off again, `:`, nothing, one that leaves a colour or a
    background on, one wider than the row, wide and zero-width characters in it), erased by CR EL (after an EL or
    not, ESC [ K or ESC [ 0 K), then the next page's lines: coloured and ended reset, left coloured, ending in EL with
    a background, empty, SGR alone, wider than the row (in ASCII, in wide characters), with a zero-width character; and what ends the paging instead (a search typed with
    backspaces, the alternate screen left as a program quits, with the cursor saved by 1049 or not, after modes or a
    save of the cursor); pages from the screen's top or another row, over what is there; in the main screen too
    (less -X, `main`: there only), where long lines mark rows as wrapped."""
    rng = random.Random(seed)
    prompts = [
        f"{CSI}7mfile.txt{CSI}27m",
        f"{CSI}7m Manual page git-log(1) line {rng.randrange(2000)} (press h for help or q to quit){CSI}27m",
        ":",
        "",
        f"{CSI}44mblue left on",
        f"{CSI}1mbold left on",
        f"{CSI}7m" + "p" * 130 + f"{CSI}27m",
        f"{CSI}7m中文 wide{CSI}27m",
        f"{CSI}7me\u0301 combining{CSI}27m",
        f"{ESC}(B{CSI}m:",
    ]
    lines = [
        f"{CSI}1mNAME{CSI}0m{CSI}m",
        f"       git-log - Show commit logs{CSI}m",
        f"{CSI}m",
        "",
        f"{CSI}3{rng.randrange(8)}m0042{CSI}0m {CSI}1mbold{CSI}0m line of coloured text {CSI}m",
        f"{CSI}32mgreen left on",
        f"{CSI}45mmagenta background{CSI}K{CSI}m",
        f"{CSI}41mred background to the end{CSI}K",
        f"{CSI}46mcyan background left on",
        "x" + "中" * 70,
        f"{CSI}44me\u0301 combining on blue",
        "plain " * 25,
        f"{CSI}4munderlined{CSI}24m and the rest’s quote",
        f"{CSI}0K",
    ]
    starts = [f"{CSI}?1049h", f"{CSI}?1049h", f"{CSI}?47h", f"{CSI}?1047h", ""]
    quits = [
        f"\r{CSI}K{CSI}?1049l",
        f"\r{CSI}K{CSI}?1l{ESC}>{CSI}?1049l",
        f"{CSI}?25h{CSI}m{CSI}?1049l",
        f"\r{CSI}K{CSI}?1049l{CSI}?1049h",
        f"\r{CSI}K{CSI}?1048h{CSI}?1049l",
        f"\r{CSI}K{CSI}?47l",
        f"{CSI}?1047l",
        f"\r{CSI}K{CSI}?1049h",
        "\r",
    ]
    if main:
        starts, quits = [""], ["\r"]
    out = [rng.choice(starts)]
    for _ in range(count):
        page = [rng.choice(lines) for _ in range(rng.randrange(1, 50))]
        out.append(rng.choice(["", "", f"{CSI}{rng.randrange(1, 41)};1H"]))  # a page from a row (less redrawing)
        out.append("".join(line + "\r\n" for line in page))
        out.append(rng.choice(prompts) + rng.choice([f"{CSI}K", f"{CSI}0K", ""]))
        pick = rng.random()
        if pick < 0.8:
            out.append("\r" + rng.choice([f"{CSI}K", f"{CSI}K", f"{CSI}0K"]))
        elif pick < 0.9:
            out.append(f"\r{CSI}K/{CSI}Kl\x08l{CSI}Ki\x08i\r{CSI}K")
        else:
            out.append(rng.choice(quits))
    return "".join(out).encode()
