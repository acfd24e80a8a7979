"""The texts virtual users speak: varied English paragraphs of two to four sentences.

Fixed (not generated) so that runs compare; varied so that the segmenter and normaliser see what
an assistant's replies contain: numbers, money, times, dialogue, lists, abbreviations, questions.
"""

from __future__ import annotations

CORPUS: tuple[str, ...] = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea. On stormy nights the "
    "beam swept across the water until dawn.",
    "Your order of 3 notebooks and 12 pens comes to $27.45, including tax. It should arrive "
    "on Thursday, March 14th, between 9 and 11 a.m. Would you like a text message when the "
    "driver is close?",
    '"Are you sure this is the right platform?" asked Maria. "Quite sure," said the guard, '
    '"the 6:40 to Edinburgh always leaves from here." She sat down on her suitcase and waited.',
    "To reset the router, first unplug it from the wall. Then wait about thirty seconds, plug "
    "it back in, and give the lights two or three minutes to settle. If the status light is "
    "still red, call us on 0800 123 456.",
    "Here is what you need for the pancakes: two cups of flour, one egg, a pinch of salt, and "
    "about 300 millilitres of milk. Whisk everything until smooth. Let the batter rest for ten "
    "minutes before you start cooking.",
    "The meeting has been moved from Tuesday to Wednesday at 2:30 p.m. Dr. Patel will present "
    "the quarterly figures, which show revenue up 8.5 percent on last year. Please send any "
    "questions to the team before noon.",
    "Honestly, I didn't expect the film to be that good. The first half hour drags a little, "
    "but the ending is wonderful, and the music stays with you for days.",
    "Mount Everest is 8,849 metres tall, and the first confirmed ascent was in 1953. Today "
    "hundreds of climbers attempt it every spring. Most of them need bottled oxygen above "
    "8,000 metres, where the air holds a third of the oxygen it does at sea level.",
    "Good morning! It's currently 14 degrees and cloudy in London, with light rain expected "
    "after lunch. Tomorrow looks brighter, with highs of around 19 degrees. Don't forget an "
    "umbrella this afternoon.",
    "There are three things to check before a long drive. Are the tyres at the right "
    "pressure? Is there enough oil and screen wash? And does everyone know where the first "
    "stop will be?",
    '"I can\'t find my keys anywhere," Tom sighed. His sister pointed at the door without '
    'looking up from her book. "Still in the lock," she said, "where you left them last week '
    'as well."',
    "The library opens at 8 a.m. on weekdays and 10 a.m. on Saturdays; it is closed on "
    "Sundays. Members may borrow up to 15 items at a time for three weeks. Late returns cost "
    "20 cents a day per item.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens "
    "mostly in the leaves, inside tiny structures called chloroplasts. Without it, there "
    "would be almost no oxygen in the air we breathe.",
    "Thanks for waiting. I've checked your account, and the refund of $64.99 was issued "
    "yesterday. Depending on your bank, it can take three to five working days to appear. Is "
    "there anything else I can help with today?",
)
