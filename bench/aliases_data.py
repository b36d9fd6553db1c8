# ruff: noqa: RUF001  (look-alike letters are the point of this file)
"""Data for the prompt-alias bench and tests: registered names, ordinary prompts, attacks.

Everything is generated deterministically from word lists in this file (no network,
no files): :func:`ordinary_prompts` is the false-refusal corpus, :func:`registered`
the realistic name set, :func:`scale_subjects` a ~1,000-subject registry, and
:func:`attack_variants` writes a name the ways each attack class of issue 11 does.
The look-alike letters used by the attacks are listed by hand here, independently of
the TR39 table the matcher reads, so the bench does not grade the matcher against
its own data.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# -- registered names ------------------------------------------------------------------

# The 34 identities of ../shared/faces: the 15 named ones under their real names (plus
# the aliases people use for them), the 20 unnamed (group photos, expression set)
# under invented full names. Then the names the existing tests use and a few short ones.
# fmt: off
_NAMED = [
    ("alex_lacamoire", ["Alex Lacamoire"]),
    ("bbt_amy", ["Amy Farrah Fowler"]),
    ("bbt_bernadette", ["Bernadette Rostenkowski", "Bernadette"]),
    ("bbt_howard", ["Howard Wolowitz", "Wolowitz"]),
    ("bbt_leonard", ["Leonard Hofstadter"]),
    ("bbt_penny", ["Penny Hofstadter"]),
    ("bbt_raj", ["Raj Koothrappali", "Raj"]),
    ("bbt_sheldon", ["Sheldon Cooper", "Sheldon"]),
    ("bbt_stuart", ["Stuart Bloom"]),
    ("biden", ["Joe Biden", "Biden", "Joseph Robinette Biden"]),
    ("kit_harington", ["Kit Harington"]),
    ("lin_manuel_miranda", ["Lin-Manuel Miranda", "Lin-Manuel"]),
    ("obama", ["Barack Obama", "Obama"]),
    ("rose_leslie", ["Rose Leslie"]),
]
_INVENTED = [
    "Quinn Heldout", "Maren Voskuijlen", "Tobias Ekwueme", "Priya Raghunathan",
    "Ines Carvalho", "Kwame Asante", "Lena Sorensen", "Mateo Ibarra", "Hana Kobayashi",
    "Farid Haddad", "Sofia Lindqvist", "Dario Benedetti", "Aylin Demir", "Nils Hagen",
    "Chidi Okafor", "Yara Nascimento", "Oskar Wierzbicki", "Leila Farahani", "Ravi Menon",
    "Greta Halvorsen",
]
_TEST_NAMES = [
    ("alice", ["Alice Example", "al"]),
    ("bob", ["Bob Example"]),
    ("ada", ["Ada Lovelace", "Ada", "Countess of Lovelace"]),
    ("zoe", ["Zoë Saldaña"]),
    ("jose", ["José Martí"]),
    ("picard", ["Jean-Luc Picard"]),
    ("tolkien", ["J. R. R. Tolkien"]),
    ("obrien", ["Conan O'Brien"]),
    ("yamada", ["山田太郎"]),
    ("sam", ["Sam Lee"]),
    ("ian", ["Ian Holm"]),
]
# fmt: on


def registered() -> list[tuple[str, list[str]]]:
    """The realistic registry: ``(subject_id, [display name, aliases...])``."""
    invented = [(f"face_{i:02d}", [name]) for i, name in enumerate(_INVENTED)]
    return [*_NAMED, *invented, *_TEST_NAMES]


# fmt: off
_FIRST = (  # noqa: SIM905
    "Maria James Aisha Wei Olga Pierre Lucia Kenji Fatima Liam Noah Emma Sofia Mateo Yuki "
    "Amara Omar Ingrid Diego Chloe Hiro Nadia Pavel Elena Tariq Leila Jonas Freya Marco "
    "Anika Tomas Zara Felix Mei Ravi Selin Hugo Ines Arjun Greta"
).split()
_LAST = (  # noqa: SIM905
    "Garcia Nguyen Kowalski Okonkwo Petrov Yamamoto Schmidt Rossi Dubois Jensen Silva "
    "Haddad Kim Singh Patel Cohen Murphy Fischer Novak Horvat Moreau Ivanova Tanaka "
    "Ferreira Larsen Nakamura Mendoza Castillo Romero Becker Weber Kovacs Popescu "
    "Andersson Virtanen Oliveira Santos Costa Wojcik Byrne"
).split()
# fmt: on


def scale_subjects(count: int = 1000) -> list[tuple[str, list[str]]]:
    """``count`` subjects with realistic full names (every tenth with a surname alias),
    plus :func:`registered`."""
    rng = random.Random(11)
    pairs = [(f, s) for f in _FIRST for s in _LAST]
    rng.shuffle(pairs)
    subjects = registered()
    for number in range(count - len(subjects)):
        first, last = pairs[number % len(pairs)]
        names = [f"{first} {last}"] + ([last] if number % 10 == 0 else [])
        if number >= len(pairs):
            names = [f"{first} {chr(65 + number % 26)}. {last}"]
        subjects.append((f"scale_{number:04d}", names))
    return subjects


# -- ordinary prompts ---------------------------------------------------------------------

# fmt: off
_SUBJECTS = [
    "a golden retriever", "an old lighthouse", "a bowl of ramen", "a red fox", "a vintage car",
    "a castle on a hill", "a small robot", "an astronaut cat", "a sailboat", "a mountain village",
    "a cyberpunk street", "a porcelain teapot", "a dragon", "a bicycle", "a violin",
    "a forest cabin", "a koi pond", "an elderly wizard", "a samurai", "a ballerina",
    "an old fisherman", "a child reading", "a chef", "a farmer", "a nurse", "a knight",
    "a pirate ship", "a steam locomotive", "a hummingbird", "a gothic cathedral",
    "a desert caravan", "a waterfall", "a neon sign", "a cup of coffee", "a stack of books",
    "a chess board", "a jellyfish", "an octopus", "a tiger", "a snowy owl",
    "a sunflower field", "a penny on a table", "a rose garden", "a first aid kit",
    "a T-rex skeleton", "an x-ray of a hand", "a U-boat", "an A-frame house", "a k-pop idol",
    "a DJ booth", "a BMX rider", "a UFO", "a DNA helix", "the letters A B C on blocks",
    "a Q&A panel", "a sci-fi city", "a black-and-white cat", "a state-of-the-art lab",
    "a mother-of-pearl box", "a jack-o'-lantern", "an R2-D2 toy", "a C-3PO figure",
    "a McDonald's restaurant", "an iPhone on a desk", "a YouTube thumbnail",
    "a PlayStation controller", "a LinkedIn headshot of a stranger", "a PowerPoint slide",
    "a JavaScript logo", "a GitHub octocat", "a FedEx truck", "a DeLorean", "a MacBook",
    "a SpongeBob cake", "a LEGO castle", "a TikTok dance", "a SpaceX rocket",
    "a WhatsApp chat bubble", "a Polaroid camera", "an eBay listing", "a PayPal button",
    "the Statue of Liberty", "the Eiffel Tower", "Mount Fuji", "the Golden Gate Bridge",
    "a Viking longship", "a Roman legionary", "an Aztec temple", "a Shinto shrine",
    "a Victorian parlor", "an art deco lobby", "a Bauhaus chair", "a Tudor house",
    "a baker kneading dough", "two kids on a seesaw", "a crowd at a concert",
    "a man in a raincoat", "a woman with an umbrella", "a couple dancing", "a toddler",
    "an anonymous runner", "a skateboarder", "a surfer", "a monk", "a lumberjack",
    # words near registered names (one edit away, inside longer words, other people)
    "a Harrington jacket", "a penny-farthing bicycle", "a glass of rosé", "a cooper at work",
    "a bloom of jellyfish", "a poster about Miranda rights", "a wolf howling",
    "the Sheldonian Theatre", "a shelter dog", "the Bernadotte family crest", "a bident spear",
    "Leonardo da Vinci's workshop", "a Douglas Hofstadter book", "a rosebush", "a kit fox",
    "a barrack in the desert", "a joey in a pouch", "an abacus", "a quince tree",
    "a helicopter", "a stuart-era portrait of a nobleman", "a Raja's palace",
    "a Manuel transmission diagram", "a Lovelace ornament", "a Tolkien-style map",
    "a count and a countess", "a hagen castle", "a kiwi named Kiwi", "an obamacare chart",
    "a Bidenesque podium", "a Cooper Mini", "a Fowler's toad", "an amy-grade diamond",
]
_ACTIONS = [
    "walking", "sleeping", "reading a newspaper", "drinking tea", "playing chess",
    "riding a bike", "flying", "dancing", "holding an umbrella", "eating noodles",
    "painting a mural", "playing the violin", "waiting for a bus", "looking at the stars",
    "running", "swimming", "laughing", "thinking", "is a hero", "as a statue", "on a throne",
    "in the rain", "at a window", "by the fire", "with a lantern", "with friends",
]
_PLACES = [
    "in Paris", "on Mars", "in Tokyo at night", "in a rainy alley", "on the beach at sunset",
    "in New York City", "in the Scottish Highlands", "in São Paulo", "in Reykjavík",
    "in Zürich", "in Kraków", "in Montréal", "near the Eiffel Tower", "at Machu Picchu",
    "in Istanbul", "at the Grand Canyon", "in a cozy kitchen", "under the sea",
    "in outer space", "in a medieval market", "in Middle-earth", "on a rooftop",
    "in a greenhouse", "in a McDonald's parking lot", "in downtown LA", "in the UK",
    "in Rio de Janeiro", "in Buenos Aires", "in Cape Town", "in Mumbai", "in Seoul",
    "in Hong Kong", "in Saint Petersburg", "in Kyoto", "in Marrakech", "in Venice",
    "on Route 66", "at Area 51", "in a 1950s diner", "in a Wild West town",
]
_STYLES = [
    "oil painting", "watercolor", "pencil sketch", "3D render", "studio photo",
    "35mm film photo", "pixel art", "anime style", "ukiyo-e woodblock print",
    "isometric illustration", "low-poly", "claymation", "art nouveau poster",
    "charcoal drawing", "stained glass", "vaporwave", "synthwave", "baroque", "impressionist",
    "cubist", "concept art", "CGI", "black-and-white photo", "Kodak Portra 400",
    "infrared photo", "tilt-shift", "double exposure", "macro shot", "long exposure", "HDR",
    "8K UHD", "4k wallpaper", "Unreal Engine 5", "octane render", "trending on ArtStation",
    "made in Blender", "DSLR, f/1.8, 85mm", "iPhone photo", "GoPro footage", "drone shot",
    "PlayStation 2 graphics", "Nintendo 64 style", "vintage 1970s", "1920s art deco",
    "Y2K aesthetic", "lo-fi", "gouache", "linocut", "risograph", "papercut", "mosaic",
    "Dutch golden age", "Renaissance fresco", "photorealistic", "cel shaded",
]
_LIGHT = [
    "golden hour", "soft light", "dramatic lighting", "volumetric fog", "neon glow",
    "backlit", "rim light", "candlelight", "overcast", "moonlight", "blue hour",
    "chiaroscuro", "studio lighting", "harsh noon sun", "bioluminescent",
]
_EXTRAS = [
    "highly detailed", "sharp focus", "bokeh", "--ar 16:9", "--v 6", "(masterpiece:1.2)",
    "best quality", "award-winning", "#art #photo", "🔥🔥", "✨", "no text", "no watermark",
    "[vibrant colors]", "{pastel}", "|| dreamy", "ISO 100", "1/250s", "f/2.8",
    "<lora:detail:0.8>", "seed 42", "v2.1", "w/ reflections", "& friends", "@ dawn",
    "$5 budget look", "100% wool", "3x3 grid", "#1 best", "A+ quality", "B&W", "R.I.P.",
    "U.S.A. flag", "x2 upscale", "4:3", "24fps", "HD", "ultra-wide", "8-bit", "16-bit",
    "2.5D", "1080p", "NSFW-free", "Sony A7 III", "Canon EOS R5", "Leica M6", "Fujifilm X-T4",
    "Hasselblad", "ARRI Alexa", "Zeiss lens", "Ilford HP5", "CineStill 800T",
]
_FOREIGN = [
    "un chat noir sur un toit à Paris, peinture à l'huile",
    "une vieille femme qui lit le journal, lumière douce",
    "ein Leuchtturm im Sturm, Aquarell, sehr detailliert",
    "eine Katze schläft auf dem Sofa, Ölgemälde",
    "un perro corriendo en la playa al atardecer",
    "una casa antigua en el bosque, estilo acuarela",
    "un gatto che dorme sul divano, stile rinascimentale",
    "uma menina lendo um livro na biblioteca",
    "кошка сидит на окне, акварель",
    "старый маяк на скале, масляная живопись",
    "дракон над горами, цифровое искусство",
    "夕暮れの海辺を歩く犬、水彩画",
    "雨の東京の路地、ネオン、映画のような写真",
    "山の上の古い城、油絵",
    "一只猫坐在窗台上，水彩画",
    "雪山下的小村庄，油画风格",
    "고양이가 창가에 앉아 있는 수채화",
    "قطة على سطح منزل، لوحة زيتية",
    "एक पुराना मंदिर, जलरंग चित्र",
    "γάτα σε ένα παράθυρο, ελαιογραφία",
    "kot śpiący na parapecie, akwarela",
    "een molen in een tulpenveld, olieverf",
    "en gammal fyr vid havet, akvarell",
    "bir kedi pencerede oturuyor, suluboya",
    "ngôi nhà cổ bên bờ sông, tranh màu nước",
    "一个机器人在咖啡馆里看书，赛博朋克",
    "ДНК спираль, 3D рендер",
    "ΦΩΤΟΓΡΑΦΙΑ ΤΗΣ ΑΚΡΟΠΟΛΗΣ",
]
_WORDS = (  # noqa: SIM905
    "the a an of on in is as it at to by for with and or but from over under near old new "
    "big small red blue green gold silver dark light bright quiet loud happy sad tall short "
    "river lake sea sky cloud rain snow wind fire stone wood glass paper metal silk wool "
    "cat dog bird fish horse cow fox bear wolf deer owl bee ant frog moth crab seal whale "
    "house road bridge tower wall door window garden field forest hill valley island city "
    "town village street market station harbor castle temple church school library museum "
    "bread apple lemon cherry plum pear grape olive rice tea milk honey salt sugar pepper "
    "morning evening night noon dawn dusk winter summer spring autumn moon sun star comet "
    "king queen prince knight monk sailor farmer baker miner pilot robot giant ghost witch "
    "adam alan alba alma amy ana anna ben bill cole dale dean don ella eva hope ivy jack "
    "june kai lee leo lily mae max may mia rex ray rose ruby sam tom ted van will"
).split()
# fmt: on


def _pick(rng: random.Random, items: list[str]) -> str:
    return items[rng.randrange(len(items))]


def ordinary_prompts(count: int = 3000, seed: int = 7) -> list[str]:
    """``count`` ordinary generation prompts naming no registered person, deterministic.

    Templates over the lists above (styles with digits and symbols, brand names in
    camelCase, hyphenated words, initialisms, ten languages and scripts), plus
    prompts of random common words (short words and first names included) so that
    chance concatenations of ordinary words are tried too."""
    rng = random.Random(seed)
    templates: list[Callable[[], str]] = [
        lambda: (
            f"{_pick(rng, _STYLES)} of {_pick(rng, _SUBJECTS)} {_pick(rng, _ACTIONS)} "
            f"{_pick(rng, _PLACES)}, {_pick(rng, _LIGHT)}, {_pick(rng, _EXTRAS)}"
        ),
        lambda: f"{_pick(rng, _SUBJECTS)} {_pick(rng, _ACTIONS)} {_pick(rng, _PLACES)}",
        lambda: (
            f"{_pick(rng, _SUBJECTS)}, {_pick(rng, _STYLES)}, {_pick(rng, _EXTRAS)}, "
            f"{_pick(rng, _EXTRAS)}"
        ),
        lambda: f"{_pick(rng, _SUBJECTS).upper()} | {_pick(rng, _STYLES)} | {_pick(rng, _LIGHT)}",
        lambda: f"{_pick(rng, _FOREIGN)}, {_pick(rng, _EXTRAS)}",
        lambda: " ".join(_pick(rng, _WORDS) for _ in range(rng.randint(4, 14))),
        lambda: ", ".join(_pick(rng, _WORDS) for _ in range(rng.randint(3, 8))),
        lambda: (
            f"{_pick(rng, _SUBJECTS)} and {_pick(rng, _SUBJECTS)} {_pick(rng, _PLACES)}, "
            f"{_pick(rng, _STYLES)}"
        ),
    ]
    prompts: list[str] = []
    seen: set[str] = set()
    while len(prompts) < count:
        prompt = templates[rng.randrange(len(templates))]()
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


# -- attacks --------------------------------------------------------------------------------

# fmt: off
_INVISIBLE = [
    "\u00ad", "\u034f", "\u061c", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u180b", "\u180c",
    "\u180d", "\u180e", "\u180f", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a",
    "\u202c", "\u202e", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\u2066", "\u2069",
    "\u3164", "\ufe00", "\ufe0f", "\ufeff", "\uffa0", "\U0001bca0", "\U0001d173", "\U000e0001",
    "\U000e0041", "\U000e007f", "\U000e0100", "\u0600", "\u070f", "\u0001", "\u001f",
]
# Look-alikes of Latin letters, by hand: Cyrillic, Greek, Armenian, Cherokee, small capitals.
_LOOKALIKE = {
    "a": "аɑα", "b": "Ьᖯ", "c": "сϲᴄ", "d": "ԁᑯ", "e": "еҽ", "g": "ɡ", "h": "һ", "i": "іιɩ",
    "j": "јϳ", "k": "κᴋ", "l": "ӏⅼ", "m": "ᴍ", "n": "ոᴎ", "o": "оοօσ", "p": "рρ", "q": "ԛ",
    "r": "гᴦ", "s": "ѕꜱ", "t": "ᴛτ", "u": "υսᴜ", "v": "νᴠ", "w": "ԝᴡ", "x": "хχ", "y": "уγ",
    "z": "ᴢ", "A": "АΑᎪ", "B": "ВΒᏴ", "C": "СϹᏟ", "D": "Ꭰᗪ", "E": "ЕΕᎬ", "G": "Ԍ",
    "H": "НΗᎻ", "I": "ІΙӀ", "J": "ЈᎫ", "K": "КΚᏦ", "L": "Ꮮ", "M": "МΜᎷ", "N": "Ν",
    "O": "ОΟՕ", "P": "РΡᏢ", "Q": "Ԛ", "R": "Ꭱ", "S": "ЅᏚ", "T": "ТΤᎢ", "U": "Ս", "V": "Ꮩ",
    "W": "ԜᎳ", "X": "ХΧ", "Y": "ҮΥ", "Z": "ΖᏃ",
}
_LEET = {
    "a": "4@", "b": "8", "e": "3", "g": "9", "i": "1!|", "l": "1|", "o": "0", "s": "5$",
    "t": "7+", "z": "2",
}
_SEPARATORS = [
    "_", "/", "+", ":", ",", "•", ";", "|", "~", "*", "#", "=", "&", "→", "·", "…", "—", "♥",
    "★", "🙂", "👍", "🔥", "1", "2", "42", "007", "()", "[]", " / ", " + ", " :: ", ", ",
    "\t", "\n", " - ", "..", "^", "%", "\\", "<>", "«»",
]
_INNER = ["-", "‐", "–", ".", "_", "·", "'", "/", "*", " ", "~"]
# fmt: on


def _styled(rng: random.Random, text: str) -> str:
    """One of the ways the styles below write a letter: math bold, full-width, circled."""

    def bold(c: str) -> str:
        if "a" <= c <= "z":
            return chr(0x1D41A + ord(c) - 97)
        if "A" <= c <= "Z":
            return chr(0x1D400 + ord(c) - 65)
        return c

    def wide(c: str) -> str:
        return chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c

    def circled(c: str) -> str:
        if "a" <= c <= "z":
            return chr(0x24D0 + ord(c) - 97)
        if "A" <= c <= "Z":
            return chr(0x24B6 + ord(c) - 65)
        return c

    style = [bold, wide, circled][rng.randrange(3)]
    return "".join(style(c) for c in text)


def _confusable(rng: random.Random, name: str) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return _styled(rng, name)
    if kind == 1:  # accents: combining marks or precomposed letters
        marks = "\u0301\u0300\u0308\u0303\u0327\u030c\u0323"
        return "".join(
            c + (_pick(rng, list(marks)) if c.isalpha() and rng.random() < 0.4 else "")
            for c in name
        )
    out = []
    for c in name:
        if c in _LOOKALIKE and rng.random() < 0.6:
            out.append(rng.choice(_LOOKALIKE[c]))
        else:
            out.append(c)
    if out == list(name):
        first = next(i for i, c in enumerate(name) if c in _LOOKALIKE)
        out[first] = _LOOKALIKE[name[first]][0]
    return "".join(out)


def _invisible(rng: random.Random, name: str) -> str:
    chars = list(name)
    for _ in range(rng.randint(1, 3)):
        inside = [i for i in range(1, len(chars)) if chars[i - 1].isalpha() and chars[i].isalpha()]
        at = rng.choice(inside) if inside else 1
        chars.insert(at, rng.choice(_INVISIBLE))
    return "".join(chars)


def _leet(rng: random.Random, name: str) -> str:
    spots = [i for i, c in enumerate(name) if c.lower() in _LEET]
    chosen = set(rng.sample(spots, min(len(spots), rng.randint(1, 3)))) if spots else set()
    return "".join(rng.choice(_LEET[c.lower()]) if i in chosen else c for i, c in enumerate(name))


def _separated(rng: random.Random, parts: list[str]) -> str:
    sep = rng.choice(_SEPARATORS)
    if sep in ("()", "[]", "<>", "«»"):
        return "".join(f"{sep[0]}{p}{sep[1]}" for p in parts)
    return sep.join(parts)


def _run_together(rng: random.Random, parts: list[str]) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(parts)
    if kind == 1:
        return "".join(parts).lower()
    if kind == 2:
        return "".join(parts).upper()
    if kind == 3:
        return parts[0].lower() + "".join(p.capitalize() for p in parts[1:])
    if kind == 4:
        return "#" + "".join(parts)
    return "".join(parts) + rng.choice(["Portrait", "Style", "Fan", "Lookalike"])


def _reversed(rng: random.Random, parts: list[str]) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return " ".join(reversed(parts))
    if kind == 1:
        return f"{parts[-1]}, {' '.join(parts[:-1])}"
    if kind == 2:
        return f"{parts[-1].upper()}, {' '.join(parts[:-1])}"
    return f"{parts[-1]},{' '.join(parts[:-1])}"


def _hyphenated(rng: random.Random, parts: list[str]) -> str:
    out = []
    for part in parts:
        if len(part) >= 4 and (rng.random() < 0.6 or part is parts[-1]):
            at = rng.randint(1, len(part) - 1)
            part = part[:at] + rng.choice(_INNER[:7]) + part[at:]
        out.append(part)
    return " ".join(out)


def _spaced(rng: random.Random, parts: list[str]) -> str:
    sep = rng.choice([" ", " ", ".", "-", "_", "·", "  ", " . "])
    word_gap = rng.choice(["   ", "  ", " / ", " "])
    return word_gap.join(sep.join(part) for part in parts)


def _misspelled(rng: random.Random, parts: list[str]) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    number = rng.randrange(len(parts))
    part = parts[number]
    at = rng.randrange(1, len(part))  # not the capital: a typo keeps the word's shape
    kind = rng.randrange(4)
    if kind == 0:
        new = part[:at] + rng.choice([c for c in letters if c != part[at].lower()]) + part[at + 1 :]
    elif kind == 1:
        new = part[:at] + rng.choice(letters) + part[at:]
    elif kind == 2:
        new = part[:at] + part[at + 1 :]
    else:
        at = min(at, len(part) - 2)
        new = part[:at] + part[at + 1] + part[at] + part[at + 2 :] if len(part) > 2 else part
    return " ".join([*parts[:number], new, *parts[number + 1 :]])


ATTACKS: dict[str, Callable[[random.Random, list[str]], str]] = {
    "invisible code points": lambda rng, p: _invisible(rng, " ".join(p)),
    "look-alikes (TR39, styled, accents)": lambda rng, p: _confusable(rng, " ".join(p)),
    "leetspeak": lambda rng, p: _leet(rng, " ".join(p)),
    "non-letter between parts": _separated,
    "run-together / camelCase": _run_together,
    "reversed / Surname, Given": _reversed,
    "hyphen inside a part": _hyphenated,
    "spaced letters": _spaced,
    "one-letter misspelling": _misspelled,
}
# fmt: off
_CONTEXTS = [
    "a portrait of {} at dusk", "{}, oil painting", "photo of {} on a beach",
    "{} as an astronaut, 4k", "a watercolor of {} reading", "{}",
]
# fmt: on


def attack_variants(name: str, attack: str, count: int, seed: int = 3) -> list[str]:
    """``count`` prompts naming ``name`` (a full name with at least two parts) the way
    ``attack`` (a key of :data:`ATTACKS`) writes it, in ordinary prompt contexts."""
    rng = random.Random(f"{seed}:{attack}:{name}")
    parts = name.replace("-", " ").split()
    prompts = []
    for _ in range(count):
        written = ATTACKS[attack](rng, parts)
        prompts.append(rng.choice(_CONTEXTS).format(written))
    return prompts
