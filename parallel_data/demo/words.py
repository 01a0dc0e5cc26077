"""Vocabulary and small world-knowledge tables for the bundled demo corpus (`parallel_data/demo/corpus.py`).

Kept apart from the generator so the generator stays readable. Every list is a tuple (never a set) so
that sampling from it with a seeded `random.Random` is reproducible across runs and Python versions.
"""

from __future__ import annotations


def _w(s: str) -> tuple[str, ...]:
    return tuple(s.split())


NAMES_F = _w("Mira Anna Lea Sofia Nora Ella Maya Zoe Ida Lina Clara Rosa Hana Ava Iris Nina Greta Alma Eva Lucy "
             "Julia Tara Emma Olga Selma Ines Vera Dana Kira Ruth Paula Sara Amy Beth Chloe Daisy Fiona Grace "
             "Helen Jane Kate Laura Mia Nell Pia Rita Tess Una Wendy Yara Agnes Bianca Celia Delia Edith Freya Gemma "
             "Hilda Imogen Jasmine Leona Marta Naomi Petra Quinn Rhea Stella Thea Ursula Viola Willa Zara")
NAMES_M = _w("Tomas Ben Omar Leo Hugo Felix Max Noah Sam Theo Jonas Karl Ivan Paul Luca Oscar Adam Elias Finn "
             "Igor Jack Liam Milo Nils Otto Pedro Rami Simon Tim Victor Will Yusuf Aron Bruno Carl David Emil "
             "Frank George Henry Ian Jakob Kevin Lars Marco Nico Owen Peter Ravi Hassan Ali Boris Cedric Dmitri Edgar "
             "Fabio Gustav Harold Ivo Julian Kofi Lorenzo Magnus Nathan Orlando Quentin Rupert Stefan Tobias Ulrich")
PET_NAMES = _w("Pip Biscuit Pepper Luna Rex Coco Bella Sunny Mango Pebble Button Ziggy Nugget Shadow Socks Bubbles "
               "Ginger Patch Toffee Maple Clover Whiskers Bramble Dot Fudge Kiwi Noodle Pickles Waffle Bean")
CITIES = _w("Oslo Lima Paris Rome Cairo Tokyo Delhi Lagos Quito Berlin Madrid Dublin Vienna Prague Athens Lisbon "
            "Seoul Hanoi Nairobi Accra Bern Riga Kyiv Warsaw Helsinki Boston Denver Austin Chicago Toronto Sydney "
            "Perth Manila Jakarta Bogota Santiago Havana Tunis Dakar Muscat Doha Baku Tbilisi Zagreb Porto Milan "
            "Naples Geneva Lyon Bergen Malmo Tallinn Vilnius Krakow Seville Valencia Ottawa Dallas Munich Hamburg "
            "Glasgow Cardiff Leeds Bristol Marseille Bordeaux Florence Venice Turin Salzburg Zurich Antwerp "
            "Utrecht Gdansk Budapest Bucharest Belgrade Sarajevo Istanbul Beirut Amman Casablanca Mombasa Kampala "
            "Durban Montreal Vancouver Seattle Portland Phoenix Memphis Atlanta Auckland Brisbane Adelaide Osaka "
            "Kyoto Busan Taipei Bangkok Mumbai Chennai Karachi Tehran Almaty Tashkent")
# Real capitals, so general text states true facts.
CAPITALS = (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Peru", "Lima"),
            ("Norway", "Oslo"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Ireland", "Dublin"),
            ("Austria", "Vienna"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Kenya", "Nairobi"),
            ("Ghana", "Accra"), ("Latvia", "Riga"), ("Poland", "Warsaw"), ("Finland", "Helsinki"),
            ("Canada", "Ottawa"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Colombia", "Bogota"),
            ("Ecuador", "Quito"), ("Vietnam", "Hanoi"), ("Senegal", "Dakar"), ("Tunisia", "Tunis"),
            ("Georgia", "Tbilisi"), ("Croatia", "Zagreb"), ("Estonia", "Tallinn"), ("Lithuania", "Vilnius"),
            ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Oman", "Muscat"),
            ("Qatar", "Doha"), ("Switzerland", "Bern"), ("Czechia", "Prague"), ("Ukraine", "Kyiv"))
COLOURS = _w("red blue green yellow orange purple pink brown black white grey golden silver")
# (singular, plural, home, food, trait, sound-or-habit)
ANIMALS = (
    ("cat", "cats", "house", "fish", "soft", "purrs when it is happy"),
    ("dog", "dogs", "house", "meat", "loyal", "barks at strangers"),
    ("horse", "horses", "field", "grass", "strong", "can run for hours"),
    ("cow", "cows", "farm", "grass", "calm", "gives milk every day"),
    ("sheep", "sheep", "hill", "grass", "woolly", "stays close to the flock"),
    ("goat", "goats", "mountain", "leaves", "stubborn", "climbs steep rocks"),
    ("pig", "pigs", "farm", "apples", "clever", "likes to roll in the mud"),
    ("duck", "ducks", "pond", "bread", "noisy", "swims in small circles"),
    ("owl", "owls", "forest", "mice", "wise", "hunts at night"),
    ("fox", "foxes", "forest", "mice", "quick", "hides its food under the snow"),
    ("rabbit", "rabbits", "meadow", "carrots", "shy", "digs long tunnels"),
    ("bear", "bears", "forest", "berries", "big", "sleeps through the winter"),
    ("wolf", "wolves", "forest", "deer", "wild", "howls at the moon"),
    ("deer", "deer", "forest", "leaves", "gentle", "runs at the smallest noise"),
    ("mouse", "mice", "barn", "seeds", "tiny", "squeaks in the dark"),
    ("frog", "frogs", "pond", "insects", "green", "sings after the rain"),
    ("bee", "bees", "garden", "nectar", "busy", "makes sweet honey"),
    ("eagle", "eagles", "mountain", "fish", "proud", "flies high above the valley"),
    ("whale", "whales", "ocean", "krill", "huge", "sings long songs"),
    ("dolphin", "dolphins", "sea", "fish", "playful", "jumps over the waves"),
    ("turtle", "turtles", "beach", "plants", "slow", "carries its house on its back"),
    ("lion", "lions", "savanna", "meat", "brave", "roars at dawn"),
    ("tiger", "tigers", "jungle", "meat", "striped", "hunts alone"),
    ("monkey", "monkeys", "jungle", "bananas", "curious", "swings from tree to tree"),
    ("parrot", "parrots", "jungle", "nuts", "loud", "can copy human words"),
    ("squirrel", "squirrels", "park", "nuts", "quick", "hides nuts for the winter"),
    ("hedgehog", "hedgehogs", "garden", "snails", "small", "rolls into a ball"),
    ("otter", "otters", "river", "fish", "playful", "floats on its back"),
    ("seal", "seals", "coast", "fish", "round", "rests on the rocks"),
    ("penguin", "penguins", "ice", "fish", "funny", "cannot fly but swims fast"),
    ("camel", "camels", "desert", "dates", "patient", "can walk for days without water"),
    ("goose", "geese", "lake", "grass", "loud", "flies south in autumn"),
    ("crow", "crows", "town", "seeds", "smart", "remembers faces"),
    ("swan", "swans", "lake", "plants", "graceful", "glides across the water"),
    ("beaver", "beavers", "river", "bark", "busy", "builds dams from sticks"),
    ("badger", "badgers", "wood", "worms", "grumpy", "comes out at dusk"),
)
OBJECTS = _w("boat bike hat kite car lamp cup bag coat book box ball chair door scarf umbrella bottle clock key "
             "pen mug basket blanket tent sled drum guitar ring shoe bucket jacket backpack teapot vase wagon "
             "sweater wallet notebook pillow candle mirror bench ladder kettle suitcase helmet glove sock belt "
             "bracelet necklace radio camera telescope carpet curtain saucepan bowl towel rug "
             "tractor trumpet whistle puzzle balloon feather shovel")
FOODS = _w("apples pears plums bread cheese soup rice noodles carrots beans eggs cake honey grapes lemons oranges "
           "tomatoes potatoes fish berries pancakes cookies nuts salad pasta dumplings figs cherries peaches olives "
           "mangoes pineapples strawberries blueberries raspberries walnuts almonds peanuts yogurt butter "
           "porridge omelettes sandwiches muffins waffles pies melons apricots coconuts lentils mushrooms "
           "cucumbers onions peppers")
DRINKS = _w("tea coffee milk juice water cocoa lemonade")
JOBS = _w("baker teacher doctor farmer pilot nurse painter singer builder driver cook fisher tailor writer sailor "
          "dentist gardener librarian plumber judge miner potter weaver guide chemist engineer artist actor "
          "architect carpenter electrician journalist mechanic musician pharmacist photographer scientist "
          "shepherd surgeon translator veterinarian waiter firefighter astronaut")
HOBBIES = _w("chess tennis football painting swimming reading singing running fishing hiking dancing cooking "
             "knitting climbing sailing drawing gardening cycling skating rowing photography juggling pottery "
             "archery fencing surfing skiing baking birdwatching origami")
INSTRUMENTS = _w("piano violin flute guitar drum trumpet harp cello")
DAYS = _w("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
MONTHS = _w("January February March April May June July August September October November December")
SEASONS = _w("spring summer autumn winter")
WEATHER = _w("sunny rainy windy cloudy snowy foggy warm cold stormy mild")
PERSON_ADJ = _w("kind brave quiet cheerful patient clever shy friendly busy calm tired happy proud careful curious "
                "gentle funny honest polite lively generous stubborn clumsy thoughtful "
                "cautious restless modest grumpy sleepy eager")
OBJECT_ADJ = _w("old new small large heavy light shiny broken clean dusty wooden soft round tall tiny "
                "rusty striped spotted woollen plastic golden fragile enormous narrow")
FEELINGS = _w("happy sad tired excited surprised nervous proud calm worried glad")
PLACES = _w("market library park garden river lake beach hill forest station bakery school harbour museum village "
            "square bridge farm cafe playground zoo")
VEHICLES = _w("bus train boat bike car tram ferry plane")
TOOLS = _w("hammer ladder map rope lantern spade torch compass needle saw")
TIMES = ("in the morning", "at noon", "in the evening", "at night", "after lunch", "before breakfast",
         "at sunset", "on the weekend")
ROOMS = _w("kitchen hall bedroom garden attic shed classroom office")
SPOTS = ("under the bed", "on the table", "in the box", "behind the door", "next to the window", "on the shelf",
         "in the drawer", "under the stairs", "by the fire", "on the floor", "in the corner", "near the sink")
SMALL_THINGS = _w("cups spoons plates forks pencils stones shells coins buttons marbles candles books")
# Words used inside copy / reverse / count tasks: short, common, one or two BPE tokens each.
TASK_WORDS = _w("cat dog owl fox sun moon star tree leaf rock sand sea ship boat car bus red blue green gold pink "
                "milk tea cake bread apple pear plum egg rice salt hat cup box key pen map bell ring drum kite "
                "rain snow wind fire ice hill lake road door wall book lamp bird fish frog bee cow pig hen goat "
                "one two three four five six big small old new fast slow hot cold")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
NUMBER_WORDS = _w("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                  "sixteen seventeen eighteen nineteen twenty")
ORDINALS = _w("first second third fourth fifth sixth seventh eighth ninth tenth")

# Plain true statements for "facts" documents (the generator adds computed ones: capitals, day order...).
TRUE_FACTS = (
    "A week has seven days.", "A year has twelve months.", "A day has twenty four hours.",
    "An hour has sixty minutes.", "A minute has sixty seconds.", "Water freezes at zero degrees Celsius.",
    "Water boils at one hundred degrees Celsius at sea level.", "The sun rises in the east.",
    "The sun sets in the west.", "The moon goes around the earth.", "The earth goes around the sun.",
    "Plants need light and water to grow.", "Ice is frozen water.", "Fish breathe with gills.",
    "Bees make honey from nectar.", "Cows eat grass.", "Spiders have eight legs.", "Insects have six legs.",
    "Birds have feathers.", "A triangle has three sides.", "A square has four equal sides.",
    "A circle has no corners.", "Snow is cold.", "Fire is hot.", "The sky is blue on a clear day.",
    "Grass is green.", "Lemons taste sour.", "Honey tastes sweet.", "Most trees lose their leaves in autumn.",
    "Winter is the coldest season.", "Summer is the warmest season.", "Rain falls from clouds.",
    "A dozen means twelve.", "Ten is an even number.", "Seven is an odd number.", "Zero is less than one.",
    "The ocean is salty.", "Rivers flow into the sea.", "Mountains are higher than hills.",
    "A baby cat is called a kitten.", "A baby dog is called a puppy.", "A baby cow is called a calf.",
    "A baby sheep is called a lamb.", "A baby horse is called a foal.", "A baby duck is called a duckling.",
    "Penguins cannot fly.", "Whales live in the ocean.", "Camels can live in the desert.",
)
SYSTEM_PROMPTS = ("You are a helpful assistant.", "You are a helpful assistant. Answer briefly.",
                  "Answer the question with a short, exact answer.", "You are a friendly assistant.",
                  "You are a careful assistant who checks every answer.")

# Richer vocabulary for descriptions, diaries and advice texts.
ACTIVITIES = (
    "cleaned the kitchen", "painted the fence", "baked bread", "fixed the roof", "planted tomatoes",
    "washed the dishes", "wrote a letter", "called an old friend", "visited the museum", "walked the dog",
    "repaired a bicycle", "sewed a button on a coat", "swept the floor", "picked apples", "climbed a hill",
    "fed the chickens", "read a novel", "watched the clouds", "built a birdhouse", "knitted a scarf",
    "polished the silver spoons", "sorted the books", "chopped firewood", "painted a portrait", "mended a sock",
    "carried the groceries home", "played cards", "tidied the garage", "folded the laundry", "watered the garden",
    "ironed a shirt", "sketched the harbour", "practised the piano", "hung a picture", "moved the furniture",
    "bought new shoes", "learned a new song", "cooked a stew", "organised a picnic", "caught a fish",
    "collected shells", "photographed birds", "studied an old map", "sharpened the pencils", "decorated a cake",
    "wrapped a present", "answered letters", "trimmed the hedge", "brewed coffee", "squeezed lemons",
    "raked the leaves", "shovelled snow", "stacked the chairs", "emptied the bins", "dusted the shelves",
    "borrowed a book from the library", "helped a neighbour", "counted the coins in a jar", "flew a kite",
    "built a snowman", "made a puzzle", "tuned the guitar", "painted the door", "cleaned the windows",
)
LANDFORMS = _w("valley meadow cliff canyon glacier marsh dune orchard vineyard waterfall lagoon ridge prairie grove "
               "creek island peninsula volcano plateau bay forest river lake mountain hill coast")
NATURE_ADJ = _w("misty quiet golden frozen sunlit ancient rocky narrow endless peaceful windswept green shimmering "
                "dark wild silent gentle steep hidden bright")
TREES = _w("oak pine birch willow maple cedar elm palm cherry apple chestnut olive")
BIRDS = _w("robin sparrow gull heron swallow blackbird owl wren magpie pigeon")
SOUNDS = _w("murmur rush roar splash whisper hum rustle patter")
WATERS = ("river", "waves", "rain", "stream", "fountain", "waterfall", "sea", "wind in the trees")
SKY_COLOURS = _w("orange pink purple grey golden pale red violet")
TIPS = (
    "Drink enough water.", "Sleep eight hours a night.", "Walk outside every day.", "Eat fruit and vegetables.",
    "Wash your hands before meals.", "Read a little every evening.", "Write down your plans.",
    "Keep your desk tidy.", "Take short breaks when you work.", "Say thank you.", "Ask for help when you need it.",
    "Turn off the lights when you leave a room.", "Check the weather before a trip.", "Pack the night before.",
    "Carry a bottle of water.", "Learn one new word every day.", "Call your family often.",
    "Stretch in the morning.", "Save a little money each week.", "Listen before you answer.",
    "Be kind to animals.", "Put things back where you found them.", "Plant a tree.", "Fix small problems early.",
)
TIP_HEADS = ("Good habits:", "Simple advice for every day:", "Tips from {name}'s grandmother:",
             "Some rules {name} tries to follow:", "Small things that help:", "Advice for a calm week:")
