"""A deterministic generator of SYNTHETIC Alpaca-format instruction records.

Every record is written by this module (no external data, no network): short tasks with
exactly one short, checkable answer each, in families such as unit conversion, capitals
or sorting. Each family has several instruction phrasings, some with an ``input`` and
some without, but one consistent answer format, so a short LoRA fine-tune learns the
format and measurably improves BLEU/ROUGE.

The shipped file ``data/synthetic_alpaca.jsonl`` is ``to_jsonl(generate_records())``;
a test keeps the two identical. Regenerate it with::

    python -m harness_datasets.synthetic_tasks

The data is project-authored and licensed Apache-2.0, like the project.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEFAULT_N",
    "DEFAULT_SEED",
    "FAMILIES",
    "SHIPPED_FILE",
    "generate_labelled",
    "generate_records",
    "to_jsonl",
]

DEFAULT_N = 600
DEFAULT_SEED = 20261127

#: the shipped file, relative to the ``harness_datasets`` package
SHIPPED_FILE = "data/synthetic_alpaca.jsonl"

#: (instruction, input, output)
Task = tuple[str, str, str]

# --------------------------------------------------------------------------- tables

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Belgium", "Brussels"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Hungary", "Budapest"),
    ("Greece", "Athens"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Iceland", "Reykjavik"),
    ("Romania", "Bucharest"),
    ("Ukraine", "Kyiv"),
    ("Russia", "Moscow"),
    ("Turkey", "Ankara"),
    ("Egypt", "Cairo"),
    ("Morocco", "Rabat"),
    ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"),
    ("Ghana", "Accra"),
    ("Ethiopia", "Addis Ababa"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Pakistan", "Islamabad"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"),
    ("Saudi Arabia", "Riyadh"),
    ("Australia", "Canberra"),
    ("New Zealand", "Wellington"),
    ("Canada", "Ottawa"),
    ("Mexico", "Mexico City"),
    ("Cuba", "Havana"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Argentina", "Buenos Aires"),
)

ELEMENTS: tuple[tuple[str, str], ...] = (
    ("hydrogen", "H"),
    ("helium", "He"),
    ("lithium", "Li"),
    ("carbon", "C"),
    ("nitrogen", "N"),
    ("oxygen", "O"),
    ("fluorine", "F"),
    ("neon", "Ne"),
    ("sodium", "Na"),
    ("magnesium", "Mg"),
    ("aluminium", "Al"),
    ("silicon", "Si"),
    ("phosphorus", "P"),
    ("sulfur", "S"),
    ("chlorine", "Cl"),
    ("argon", "Ar"),
    ("potassium", "K"),
    ("calcium", "Ca"),
    ("titanium", "Ti"),
    ("iron", "Fe"),
    ("cobalt", "Co"),
    ("nickel", "Ni"),
    ("copper", "Cu"),
    ("zinc", "Zn"),
    ("silver", "Ag"),
    ("tin", "Sn"),
    ("iodine", "I"),
    ("platinum", "Pt"),
    ("gold", "Au"),
    ("mercury", "Hg"),
    ("lead", "Pb"),
    ("uranium", "U"),
)

PLURALS: tuple[tuple[str, str], ...] = (
    # regular
    ("cat", "cats"),
    ("dog", "dogs"),
    ("book", "books"),
    ("tree", "trees"),
    ("car", "cars"),
    ("apple", "apples"),
    ("house", "houses"),
    ("bird", "birds"),
    ("chair", "chairs"),
    ("river", "rivers"),
    ("cloud", "clouds"),
    ("garden", "gardens"),
    ("box", "boxes"),
    ("bus", "buses"),
    ("church", "churches"),
    ("dish", "dishes"),
    ("glass", "glasses"),
    ("fox", "foxes"),
    ("watch", "watches"),
    ("brush", "brushes"),
    ("city", "cities"),
    ("baby", "babies"),
    ("party", "parties"),
    ("story", "stories"),
    ("country", "countries"),
    ("library", "libraries"),
    # irregular
    ("child", "children"),
    ("mouse", "mice"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("person", "people"),
    ("man", "men"),
    ("woman", "women"),
    ("goose", "geese"),
    ("ox", "oxen"),
    ("knife", "knives"),
    ("leaf", "leaves"),
    ("wolf", "wolves"),
    ("cactus", "cacti"),
    ("sheep", "sheep"),
    ("deer", "deer"),
    ("fish", "fish"),
)

ANTONYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("early", "late"),
    ("high", "low"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("young", "old"),
    ("full", "empty"),
    ("wet", "dry"),
    ("hard", "soft"),
    ("up", "down"),
    ("open", "closed"),
    ("win", "lose"),
    ("buy", "sell"),
    ("push", "pull"),
    ("inside", "outside"),
    ("begin", "end"),
    ("true", "false"),
    ("clean", "dirty"),
    ("loud", "quiet"),
    ("thick", "thin"),
    ("love", "hate"),
    ("above", "below"),
    ("arrive", "depart"),
    ("accept", "refuse"),
    ("ancient", "modern"),
    ("cheap", "expensive"),
    ("easy", "difficult"),
    ("remember", "forget"),
)

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
    "seventeen", "eighteen", "nineteen",
)  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

FIRST_NAMES = (
    "Tom", "Ana", "Ravi", "Mei", "Lena", "Omar", "Sara", "Jonas",
    "Priya", "Diego", "Yuki", "Fatima", "Liam", "Chloe", "Kwame", "Ingrid",
)  # fmt: skip
LAST_NAMES = ("Lopez", "Novak", "Sato", "Okafor", "Berg", "Haddad", "Rossi", "Kim", "Silva", "Meyer")
CITIES = (
    "Lisbon", "Toronto", "Nairobi", "Osaka", "Dublin", "Lyon", "Austin", "Porto",
    "Krakow", "Seville", "Melbourne", "Hamburg", "Bergen", "Quito", "Leeds", "Turin",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

COUNTABLES = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "shells")

NOUNS = (
    "cat", "river", "teacher", "garden", "window", "student", "farmer", "train",
    "bird", "doctor", "child", "letter", "mountain", "kitchen", "robot", "painter",
)  # fmt: skip
ADJECTIVES = ("small", "quiet", "happy", "old", "bright", "busy", "tired", "clever", "green", "friendly")
VERBS = ("sees", "visits", "paints", "follows", "watches", "finds", "cleans", "helps")
ADVERBS = ("today", "slowly", "again", "quickly", "outside", "together")

WORDS = (
    "planet", "garden", "window", "bridge", "orange", "silver", "market", "candle",
    "forest", "pencil", "rocket", "violin", "harbor", "lemon", "castle", "meadow",
    "puzzle", "tunnel", "basket", "dragon", "island", "jacket", "mirror", "anchor",
    "banana", "cherry", "engine", "falcon", "guitar", "kettle", "ladder", "needle",
    "pepper", "rabbit", "saddle", "tomato", "velvet", "wizard", "yellow", "zebra",
    "apple", "cloud", "river", "stone", "light", "music", "ocean", "paper",
)  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _number_words(n: int) -> str:
    """English words for 0 <= n < 100, hyphenated (``forty-two``)."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] if ones == 0 else f"{TENS[tens]}-{ONES[ones]}"


def _fmt(value: float) -> str:
    """A number without a trailing ``.0``."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _pick_template(rng: random.Random, templates: tuple[tuple[str, str], ...], **values: str) -> tuple[str, str]:
    """Choose one (instruction, input) template and fill it in."""
    instruction, input_ = rng.choice(templates)
    return instruction.format(**values), input_.format(**values)


def _person(rng: random.Random) -> tuple[str, str, int, str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    age = rng.randint(19, 78)
    city = rng.choice(CITIES)
    email = f"{first.lower()}.{last.lower()}@{rng.choice(EMAIL_DOMAINS)}"
    return first, last, age, city, email


# --------------------------------------------------------------------------- families
# Each family returns (instruction, input, output); "input" may be "".
# Answer style per family: a short full sentence (unit_conversion, capital,
# chemical_symbol, comparison) or the bare answer (all others).

_UNITS: tuple[tuple[str, str, str, str, str, int], ...] = (
    # singular, plural, abbreviation, target singular, target plural, factor
    ("kilometer", "kilometers", "km", "meter", "meters", 1000),
    ("kilogram", "kilograms", "kg", "gram", "grams", 1000),
    ("hour", "hours", "h", "minute", "minutes", 60),
)


def _unit_conversion(rng: random.Random) -> Task:
    kind = rng.randrange(len(_UNITS) + 1)
    if kind == len(_UNITS):  # Celsius to Fahrenheit, integer results only
        c = rng.randrange(-40, 105, 5)
        f = c * 9 // 5 + 32
        instruction, input_ = _pick_template(
            rng,
            (
                ("Convert {c}°C to Fahrenheit.", ""),
                ("What is {c} degrees Celsius in degrees Fahrenheit?", ""),
                ("Express a temperature of {c}°C in °F.", ""),
                ("Convert this temperature from Celsius to Fahrenheit.", "{c}°C"),
            ),
            c=str(c),
        )
        return instruction, input_, f"{c}°C is {f}°F."
    sing, plur, abbr, to_sing, to_plur, factor = _UNITS[kind]
    value = rng.randint(1, 60) if rng.random() < 0.75 else rng.randint(1, 20) + 0.5
    result = int(value * factor)
    v = _fmt(value)
    from_name = sing if value == 1 else plur
    instruction, input_ = _pick_template(
        rng,
        (
            ("Convert {v} {from_name} to {to_plur}.", ""),
            ("How many {to_plur} are in {v} {from_name}?", ""),
            ("Express {v} {abbr} in {to_plur}.", ""),
            ("Convert the following quantity to {to_plur}.", "{v} {abbr}"),
            ("Change this value into {to_plur}.", "{v} {from_name}"),
        ),
        v=v,
        from_name=from_name,
        abbr=abbr,
        to_plur=to_plur,
    )
    return instruction, input_, f"{v} {from_name} is {result} {to_plur}."


def _arithmetic(rng: random.Random) -> Task:
    name = rng.choice(FIRST_NAMES)
    item = rng.choice(COUNTABLES)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        problem, answer = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?", a + b
    elif kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        problem, answer = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} are left?", a - b
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        problem, answer = f"There are {a} boxes with {b} {item} in each box. How many {item} are there in total?", a * b
    instruction, input_ = _pick_template(
        rng,
        (
            ("{problem}", ""),
            ("Answer with a number only. {problem}", ""),
            ("Solve this word problem and give only the number.", "{problem}"),
            ("Read the problem and write the answer as a number.", "{problem}"),
        ),
        problem=problem,
    )
    return instruction, input_, str(answer)


def _random_date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)


def _date_long(rng: random.Random) -> Task:
    y, m, d = _random_date(rng)
    iso = f"{y:04d}-{m:02d}-{d:02d}"
    instruction, input_ = _pick_template(
        rng,
        (
            ("Rewrite the date {iso} in the form 'Month D, YYYY'.", ""),
            ("Write {iso} as a date with the month spelled out.", ""),
            ("Convert the ISO date {iso} to a written date such as 'January 5, 2020'.", ""),
            ("Write the following ISO date with the month name spelled out.", "{iso}"),
        ),
        iso=iso,
    )
    return instruction, input_, f"{MONTHS[m - 1]} {d}, {y}"


def _date_dmy(rng: random.Random) -> Task:
    y, m, d = _random_date(rng)
    iso = f"{y:04d}-{m:02d}-{d:02d}"
    instruction, input_ = _pick_template(
        rng,
        (
            ("Convert the date {iso} to DD/MM/YYYY format.", ""),
            ("Write {iso} in day/month/year order as DD/MM/YYYY.", ""),
            ("Reformat this date as DD/MM/YYYY.", "{iso}"),
            ("Change the following YYYY-MM-DD date into DD/MM/YYYY.", "{iso}"),
        ),
        iso=iso,
    )
    return instruction, input_, f"{d:02d}/{m:02d}/{y:04d}"


def _number_commas(rng: random.Random) -> Task:
    digits = rng.randint(4, 9)
    n = rng.randint(10 ** (digits - 1), 10**digits - 1)
    instruction, input_ = _pick_template(
        rng,
        (
            ("Write the number {n} with commas as thousands separators.", ""),
            ("Format {n} using commas to group the thousands.", ""),
            ("Add thousands separators to this number.", "{n}"),
            ("Insert commas into the number below so it is easier to read.", "{n}"),
        ),
        n=str(n),
    )
    return instruction, input_, f"{n:,}"


def _number_words_task(rng: random.Random) -> Task:
    n = rng.randrange(100)
    instruction, input_ = _pick_template(
        rng,
        (
            ("Write the number {n} in words.", ""),
            ("How do you spell {n} in English words?", ""),
            ("Spell out the following number in words.", "{n}"),
            ("Write this number as English words.", "{n}"),
        ),
        n=str(n),
    )
    return instruction, input_, _number_words(n)


def _capital(rng: random.Random) -> Task:
    country, capital = rng.choice(CAPITALS)
    instruction, input_ = _pick_template(
        rng,
        (
            ("What is the capital of {country}?", ""),
            ("Name the capital city of {country}.", ""),
            ("Which city is the capital of {country}?", ""),
            ("Give the capital city of the country below.", "{country}"),
            ("What is the capital of this country?", "{country}"),
        ),
        country=country,
    )
    return instruction, input_, f"The capital of {country} is {capital}."


def _chemical_symbol(rng: random.Random) -> Task:
    element, symbol = rng.choice(ELEMENTS)
    instruction, input_ = _pick_template(
        rng,
        (
            ("What is the chemical symbol for {element}?", ""),
            ("Give the chemical symbol of {element}.", ""),
            ("Which symbol does {element} have in the periodic table?", ""),
            ("Write the chemical symbol of the element below.", "{element}"),
        ),
        element=element,
    )
    return instruction, input_, f"The chemical symbol for {element} is {symbol}."


def _plural(rng: random.Random) -> Task:
    word, plural = rng.choice(PLURALS)
    instruction, input_ = _pick_template(
        rng,
        (
            ("What is the plural of '{word}'?", ""),
            ("Write the plural form of the word '{word}'.", ""),
            ("Give the plural of the following noun.", "{word}"),
            ("Turn this noun into its plural form.", "{word}"),
        ),
        word=word,
    )
    return instruction, input_, plural


def _sort_numbers(rng: random.Random) -> Task:
    numbers = rng.sample(range(1, 100), rng.randint(4, 7))
    shown = ", ".join(map(str, numbers))
    instruction, input_ = _pick_template(
        rng,
        (
            ("Sort these numbers from smallest to largest: {shown}", ""),
            ("Arrange {shown} in ascending order.", ""),
            ("Sort the following numbers in ascending order.", "{shown}"),
            ("Put these numbers in order from lowest to highest.", "{shown}"),
        ),
        shown=shown,
    )
    return instruction, input_, ", ".join(map(str, sorted(numbers)))


def _sort_words(rng: random.Random) -> Task:
    words = rng.sample(WORDS, rng.randint(3, 6))
    shown = ", ".join(words)
    instruction, input_ = _pick_template(
        rng,
        (
            ("Sort these words alphabetically: {shown}", ""),
            ("Put the words {shown} in alphabetical order.", ""),
            ("Arrange the following words in alphabetical order.", "{shown}"),
            ("Sort this list of words from A to Z.", "{shown}"),
        ),
        shown=shown,
    )
    return instruction, input_, ", ".join(sorted(words))


def _extract_field(rng: random.Random) -> Task:
    first, last, age, city, email = _person(rng)
    sentence = rng.choice(
        (
            f"{first} {last} is {age} years old, lives in {city}, and can be reached at {email}.",
            f"My name is {first} {last}; I am {age}, I live in {city}, and my email is {email}.",
            f"Contact {first} {last} ({email}), aged {age}, from {city}.",
        )
    )
    field = rng.choice(("email", "age", "city"))
    answer = {"email": email, "age": str(age), "city": city}[field]
    question = {
        "email": ("What is the email address in the following text?", "Extract the email address from this text."),
        "age": ("How old is the person described below?", "Extract the age of the person in this text."),
        "city": ("Which city does the person below live in?", "Extract the city from this text."),
    }[field]
    if rng.random() < 0.25:
        return f"What is the {field} in: \"{sentence}\"", "", answer
    return rng.choice(question), sentence, answer


def _reverse_word(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    instruction, input_ = _pick_template(
        rng,
        (
            ("Reverse the word '{word}'.", ""),
            ("Write '{word}' backwards.", ""),
            ("Spell the following word in reverse order.", "{word}"),
            ("Reverse the letters of this word.", "{word}"),
        ),
        word=word,
    )
    return instruction, input_, word[::-1]


def _sentence(rng: random.Random) -> str:
    words = ["The", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), "the"]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    if rng.random() < 0.5:
        words.append(rng.choice(ADVERBS))
    return " ".join(words) + "."


def _count_words(rng: random.Random) -> Task:
    sentence = _sentence(rng)
    instruction, input_ = _pick_template(
        rng,
        (
            ("How many words are in the sentence \"{sentence}\"?", ""),
            ("Count the words in this sentence.", "{sentence}"),
            ("How many words does the following sentence contain?", "{sentence}"),
        ),
        sentence=sentence,
    )
    return instruction, input_, str(len(sentence.split()))


def _count_letters(rng: random.Random) -> Task:
    word = rng.choice(WORDS + NOUNS + ADJECTIVES)
    instruction, input_ = _pick_template(
        rng,
        (
            ("How many letters are in the word '{word}'?", ""),
            ("Count the letters in '{word}'.", ""),
            ("How many letters does this word have?", "{word}"),
            ("Count the number of letters in the following word.", "{word}"),
        ),
        word=word,
    )
    return instruction, input_, str(len(word))


_ANTONYMS: tuple[tuple[str, str], ...] = ANTONYM_PAIRS + tuple((b, a) for a, b in ANTONYM_PAIRS)


def _antonym(rng: random.Random) -> Task:
    word, opposite = rng.choice(_ANTONYMS)
    instruction, input_ = _pick_template(
        rng,
        (
            ("What is the opposite of '{word}'?", ""),
            ("Give an antonym for the word '{word}'.", ""),
            ("Write the antonym of the following word.", "{word}"),
            ("What word means the opposite of this one?", "{word}"),
        ),
        word=word,
    )
    return instruction, input_, opposite


def _comparison(rng: random.Random) -> Task:
    a, b = rng.sample(range(-50, 1000), 2)
    instruction, input_ = _pick_template(
        rng,
        (
            ("Which is larger, {a} or {b}?", ""),
            ("Compare {a} and {b}. Which number is larger?", ""),
            ("Which of these two numbers is larger?", "{a} and {b}"),
            ("Find the larger of the two numbers below.", "{a}, {b}"),
        ),
        a=str(a),
        b=str(b),
    )
    return instruction, input_, f"The larger number is {max(a, b)}."


def _uppercase(rng: random.Random) -> Task:
    phrase = " ".join(rng.sample(WORDS, rng.randint(1, 4)))
    instruction, input_ = _pick_template(
        rng,
        (
            ("Convert '{phrase}' to uppercase.", ""),
            ("Write '{phrase}' in capital letters.", ""),
            ("Rewrite the following text in uppercase.", "{phrase}"),
            ("Change this text to all capital letters.", "{phrase}"),
        ),
        phrase=phrase,
    )
    return instruction, input_, phrase.upper()


#: family name -> generator, in a fixed order (the order matters for determinism)
FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "unit_conversion": _unit_conversion,
    "arithmetic": _arithmetic,
    "date_long": _date_long,
    "date_dmy": _date_dmy,
    "number_commas": _number_commas,
    "number_words": _number_words_task,
    "capital": _capital,
    "chemical_symbol": _chemical_symbol,
    "plural": _plural,
    "sort_numbers": _sort_numbers,
    "sort_words": _sort_words,
    "extract_field": _extract_field,
    "reverse_word": _reverse_word,
    "count_words": _count_words,
    "count_letters": _count_letters,
    "antonym": _antonym,
    "comparison": _comparison,
    "uppercase": _uppercase,
}


# --------------------------------------------------------------------------- public


def generate_labelled(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[tuple[str, dict[str, str]]]:
    """``n`` unique (family, record) pairs, deterministic in ``seed``.

    Families take turns in a freshly shuffled order each round, so every family is
    represented once ``n >= len(FAMILIES)``. A record that duplicates an earlier one
    (same instruction, input and output) is dropped and generation continues.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    names = list(FAMILIES)
    seen: set[tuple[str, str, str]] = set()
    out: list[tuple[str, dict[str, str]]] = []
    attempts, max_attempts = 0, 100 * max(n, 1)
    while len(out) < n:
        rng.shuffle(names)
        for family in names:
            if len(out) >= n:
                break
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(f"could not generate {n} unique records (got {len(out)})")
            task = FAMILIES[family](rng)
            if task in seen:
                continue
            seen.add(task)
            instruction, input_, output = task
            out.append((family, {"instruction": instruction, "input": input_, "output": output}))
    return out


def generate_records(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """``n`` unique synthetic Alpaca records (``instruction``, ``input``, ``output``), deterministic in ``seed``."""
    return [record for _, record in generate_labelled(n, seed)]


def to_jsonl(records: list[dict[str, str]]) -> str:
    """The exact text of the shipped file: one JSON object per line, UTF-8, newline-terminated."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _write_shipped() -> Path:
    path = Path(__file__).parent / SHIPPED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_jsonl(generate_records()), encoding="utf-8", newline="\n")
    return path


if __name__ == "__main__":
    print(f"wrote {_write_shipped()}")
