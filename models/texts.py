"""Built-in texts for forward passes, written for this project (no corpus is downloaded).

Two disjoint sets of plain English sentences on mixed topics:

* ``CALIBRATION``: what sensitivities and activation statistics are measured on (30 sentences);
* ``HELD_OUT``: what a quantized model is judged on (100 sentences, none shared with
  ``CALIBRATION``, so a front is never validated on the text its allocation was fitted to).

Encoders embed each sentence separately; decoders read the sentences joined by spaces as
running text (``running_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quant.errors import DseError

CALIBRATION = (
    "The committee met on Tuesday to review the budget for the new library.",
    "Rain is expected over the northern hills tonight, with snow on the higher peaks.",
    "She tuned the old guitar, played a few chords and then put it back in its case.",
    "To bake the bread, mix flour, water, salt and yeast, and let the dough rise for two hours.",
    "The spacecraft entered orbit after a seven-month journey and began sending images home.",
    "Interest rates rose again, and analysts expect house prices to fall in the coming year.",
    "A fast sorting algorithm divides the list, sorts each half and merges the results.",
    "The children ran across the park to watch the ducks on the frozen pond.",
    "Doctors recommend regular exercise, enough sleep and a diet rich in vegetables.",
    "The museum reopened its gallery of medieval maps after a long restoration.",
    "He forgot his umbrella at the station and walked home through the storm.",
    "Solar panels convert sunlight into electricity without moving parts.",
    "The striker scored twice in the second half and the crowd sang until the final whistle.",
    "Please send the signed contract back by Friday so that work can start next month.",
    "Honeybees communicate the direction of flowers to each other with a waggle dance.",
    "The river flooded the lower town, and volunteers filled sandbags through the night.",
    "A compiler translates source code into machine instructions that a processor executes.",
    "Grandmother kept every letter she received in a wooden box under her bed.",
    "The train to the coast was delayed by forty minutes because of a signal failure.",
    "Volcanic ash closed the airport and thousands of travellers were stranded.",
    "The orchestra rehearsed the symphony for weeks before the opening night.",
    "Wind turbines on the ridge supply power to about ten thousand homes.",
    "The detective noticed that the clock in the hall had stopped at midnight.",
    "Farmers harvested the wheat early because a dry summer had ripened it quickly.",
    "Quantum computers use qubits, which can hold superpositions of zero and one.",
    "The cat slept on the warm windowsill while the rain tapped on the glass.",
    "Our team released a new version of the app that fixes the login bug.",
    "Ancient traders carried silk, spices and paper along routes across the desert.",
    "Vaccines train the immune system to recognise a virus before an infection.",
    "The mountain village celebrates the end of winter with a festival of lanterns.",
)
"""Calibration sentences: sensitivities and activation statistics are measured on these."""

HELD_OUT = (
    "The bakery on the corner sells out of croissants before eight every morning.",
    "A thunderstorm knocked out power across the valley for most of the afternoon.",
    "The new bridge will shorten the commute between the two towns by twenty minutes.",
    "Our neighbour grows tomatoes, beans and pumpkins in a small garden behind the house.",
    "The library extended its opening hours during the exam period.",
    "Astronomers found a planet that orbits its star once every three days.",
    "The referee stopped the match when fog rolled in from the sea.",
    "He learned to sail on a lake before he ever saw the ocean.",
    "The startup raised enough money to hire ten more engineers this year.",
    "A good night's sleep helps the brain store what it learned during the day.",
    "The ferry crossed the strait in calm water under a clear blue sky.",
    "Municipal workers repaired the potholes on the main road last week.",
    "The violinist played a slow piece that left the audience in silence.",
    "A database index speeds up queries at the cost of slower writes.",
    "Snow covered the village overnight and the schools stayed closed.",
    "The chef added a pinch of saffron to give the rice its golden colour.",
    "Elephants remember the paths to water holes across hundreds of kilometres.",
    "The city council voted to plant a thousand trees along its streets.",
    "She wrote her first novel on a typewriter she bought at a flea market.",
    "The hospital opened a new wing for children with heart conditions.",
    "Engineers tested the rocket engine for three minutes in the desert.",
    "The old lighthouse now houses a small museum about shipwrecks.",
    "Prices at the market rose after the long drought ruined the harvest.",
    "A neural network learns by adjusting its weights to reduce a loss.",
    "The hikers reached the summit just before the clouds closed in.",
    "Our flight was cancelled, so we took the night train instead.",
    "The students built a robot that can sort recycling by material.",
    "A warm current keeps the harbour free of ice all winter.",
    "The painter mixed blue and yellow to find the green of the spring leaves.",
    "The bank will close its branch in the village at the end of the month.",
    "Owls hunt at night and can hear a mouse moving under the snow.",
    "The marathon route passes the cathedral and follows the river to the finish.",
    "Backups should be tested regularly, or they may fail when they are needed.",
    "The farmer repaired the fence before moving the sheep to the upper field.",
    "A small earthquake rattled windows but caused no serious damage.",
    "The choir sang carols in the square while people sold hot chestnuts.",
    "Batteries lose capacity faster when they are kept at high temperatures.",
    "The archaeologists uncovered a Roman road beneath the car park.",
    "Her grandfather taught her to play chess on rainy Sunday afternoons.",
    "The museum's new exhibition explains how glass has been made for centuries.",
    "The encryption key is rotated every ninety days for security.",
    "Seagulls followed the fishing boat back into the harbour at dawn.",
    "The government announced new rules for the recycling of electronic waste.",
    "He burned the toast while reading the morning newspaper.",
    "The telescope on the mountain can see galaxies billions of light years away.",
    "The town's football club celebrated its hundredth anniversary with a parade.",
    "Coffee plants grow best on shaded slopes with plenty of rain.",
    "The software update improved battery life on older phones.",
    "A fox crossed the road and disappeared into the hedge.",
    "The teacher asked the class to write a poem about the sea.",
    "The airline added direct flights between the two capitals.",
    "Glaciers in the range have retreated by several hundred metres in fifty years.",
    "The carpenter measured the doorway twice before cutting the wood.",
    "A virus spreads more slowly when people wash their hands often.",
    "The concert hall was designed so that every seat has good acoustics.",
    "She planted tulip bulbs in the autumn and waited for the spring.",
    "The spreadsheet calculates the monthly payments for the loan.",
    "The ship's captain steered around the storm to save time and fuel.",
    "The zoo welcomed a baby giraffe that stood up within an hour of birth.",
    "Cyclists rode through the vineyards during the autumn harvest.",
    "The company recalled the toy after reports that small parts came loose.",
    "A warm bath before bed can help you fall asleep faster.",
    "The dam provides water for the city and electricity for the region.",
    "The poet read her new work aloud in a crowded bookshop.",
    "Thick fog delayed the first flights of the morning.",
    "The mechanic replaced the brake pads and checked the tyres.",
    "Dolphins sleep with one half of the brain at a time.",
    "The village hall hosts a film night on the first Friday of each month.",
    "Tax forms must be submitted online before the end of April.",
    "The scientist cooled the sample to a few degrees above absolute zero.",
    "The kids built a snowman with a carrot nose and a woollen scarf.",
    "Traffic lights in the city centre are now controlled by a central computer.",
    "The garden path was lined with lavender that attracted bees all summer.",
    "He missed the bus and had to run to catch the last train.",
    "The recipe calls for three eggs, a cup of sugar and some lemon zest.",
    "The satellite measures the height of the sea to within a few centimetres.",
    "A new species of frog was discovered in the cloud forest.",
    "The mayor opened the festival by cutting a ribbon on the stage.",
    "Compression reduces the size of a file by removing redundant information.",
    "The tailor shortened the sleeves of the jacket by two centimetres.",
    "Waves crashed against the harbour wall during the winter storm.",
    "The professor's lecture on ancient Egypt filled the largest hall.",
    "The power grid must balance supply and demand every second.",
    "Children collected shells along the beach at low tide.",
    "The restaurant changes its menu with the seasons.",
    "Heavy rain caused a landslide that blocked the mountain pass.",
    "The editor asked the reporter to check every quote before printing.",
    "Lemon trees need protection from frost in colder climates.",
    "The orchestra's conductor raised his baton and the hall fell silent.",
    "A hash function maps data of any size to a fixed-size value.",
    "The family drove north to see the autumn colours in the forest.",
    "The clinic offers free health checks for people over sixty.",
    "Migrating geese flew south in a long V across the evening sky.",
    "The printer ran out of ink halfway through the report.",
    "The runners warmed up on the track before the race began.",
    "Farmers use drones to check the health of their crops.",
    "The old castle walls were repaired with stone from the original quarry.",
    "The negotiations lasted all night, and an agreement was signed at dawn.",
    "Strong winds scattered leaves across the empty playground.",
    "The physicist explained why the sky is blue to a room of curious children.",
)
"""Held-out sentences: front points and ``dse evaluate`` are judged on these."""


def running_text(sentences: Sequence[str]) -> str:
    """Sentences joined by spaces: the running text a decoder reads."""
    return " ".join(sentences)


def read_text_file(path: str | Path) -> tuple[str, ...]:
    """Non-empty lines of a user text file (one sample per line); one-line DseError if unusable."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DseError(f"{path}: no such text file; pass a UTF-8 file with one sample per line") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DseError(f"{path}: cannot read as UTF-8 text ({err}); pass a UTF-8 file with one sample per line") from None
    samples = tuple(line.strip() for line in lines if line.strip())
    if not samples:
        raise DseError(f"{path}: no text (every line is empty); put one sample per line")
    return samples
