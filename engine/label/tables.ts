/**
 * Built-in phrase tables for CLIP captioning, in the spirit of the CLIP Interrogator's: each table is a set of
 * alternatives of one kind (what the picture shows, its medium, style, light, colours, framing), ranked by
 * cosine similarity with the image. Artists are optional (off by default): naming artists in captions is a
 * choice a user should make. Written for this project; short on purpose, user tables and --vocab add more.
 */

export const TABLE_NAMES = ['subjects', 'medium', 'style', 'lighting', 'colours', 'composition', 'artists'] as const;
export type TableName = (typeof TABLE_NAMES)[number];

/** Used unless a caller chooses: everything except artists. */
export const DEFAULT_TABLES: readonly TableName[] = ['subjects', 'medium', 'style', 'lighting', 'colours', 'composition'];

export const BUILTIN_TABLES: Readonly<Record<TableName, readonly string[]>> = {
  subjects: [
    'a woman', 'a man', 'a girl', 'a boy', 'a child', 'a group of people', 'an old man', 'an old woman', 'a couple',
    'a portrait of a person', 'a face', 'a hand', 'a crowd', 'a soldier', 'a knight', 'a robot', 'an astronaut',
    'a cat', 'a dog', 'a horse', 'a bird', 'a fish', 'a dragon', 'a monster', 'an insect', 'a butterfly', 'a wild animal',
    'a landscape', 'a mountain', 'a forest', 'a beach', 'the sea', 'a lake', 'a river', 'a desert', 'a field of flowers',
    'a city street', 'a city skyline', 'a building', 'a house', 'a castle', 'a church', 'a bridge', 'a room', 'a kitchen',
    'a car', 'a train', 'a ship', 'an airplane', 'a spaceship', 'a bicycle',
    'food on a plate', 'a bowl of soup', 'a cake', 'fruit', 'a cup of coffee', 'flowers in a vase', 'a tree', 'a plant',
    'a book', 'a chair', 'a table', 'a bottle', 'a weapon', 'a sword', 'a logo', 'text', 'a diagram', 'a map', 'a pattern',
    'a night sky', 'clouds', 'a sunset', 'snow', 'rain', 'fire', 'water', 'an abstract shape',
  ],
  medium: [
    'a photograph', 'a close-up photograph', 'a black and white photograph', 'a polaroid photo', 'a film still',
    'a digital painting', 'an oil painting', 'a watercolor painting', 'an acrylic painting', 'a pencil sketch',
    'a charcoal drawing', 'an ink drawing', 'a line drawing', 'a comic book panel', 'an anime screenshot', 'a manga page',
    'a 3d render', 'a low poly render', 'pixel art', 'vector art', 'a poster', 'an illustration', 'a children\'s book illustration',
    'a screenshot', 'a scan', 'an infographic', 'a mosaic', 'a sculpture', 'a woodcut print', 'a stained glass window', 'an embroidery',
  ],
  style: [
    'realism', 'photorealism', 'hyperrealism', 'impressionism', 'expressionism', 'surrealism', 'cubism', 'art nouveau',
    'art deco', 'baroque', 'renaissance', 'romanticism', 'pop art', 'minimalism', 'abstract art', 'fantasy art',
    'science fiction', 'cyberpunk', 'steampunk', 'vaporwave', 'gothic', 'ukiyo-e', 'anime style', 'cartoon style',
    'concept art', 'studio ghibli style', 'retro style', 'vintage', 'folk art', 'street art', 'graffiti', 'brutalism',
  ],
  lighting: [
    'soft lighting', 'hard lighting', 'natural light', 'studio lighting', 'backlit', 'rim light', 'golden hour',
    'blue hour', 'dramatic lighting', 'cinematic lighting', 'volumetric lighting', 'low key lighting', 'high key lighting',
    'neon lights', 'candlelight', 'moonlight', 'sunlight', 'overcast', 'flash photography', 'dim light',
  ],
  colours: [
    'monochrome', 'black and white', 'sepia', 'vibrant colors', 'muted colors', 'pastel colors', 'warm colors',
    'cool colors', 'high contrast', 'low contrast', 'red', 'orange', 'yellow', 'green', 'blue', 'purple', 'pink',
    'brown', 'gray', 'white background', 'black background', 'colorful', 'desaturated', 'neon colors',
  ],
  composition: [
    'close-up', 'extreme close-up', 'portrait', 'full body', 'upper body', 'wide shot', 'aerial view', 'bird\'s eye view',
    'low angle', 'high angle', 'from behind', 'side view', 'symmetrical', 'centered', 'rule of thirds', 'macro',
    'panorama', 'bokeh', 'depth of field', 'tilt-shift', 'isometric', 'flat lay', 'silhouette', 'simple background',
  ],
  artists: [
    'by Leonardo da Vinci', 'by Michelangelo', 'by Rembrandt', 'by Johannes Vermeer', 'by Caravaggio', 'by Albrecht Dürer',
    'by J. M. W. Turner', 'by Caspar David Friedrich', 'by Claude Monet', 'by Pierre-Auguste Renoir', 'by Edgar Degas',
    'by Vincent van Gogh', 'by Paul Cézanne', 'by Paul Gauguin', 'by Gustav Klimt', 'by Alphonse Mucha', 'by Egon Schiele',
    'by Edvard Munch', 'by Henri Matisse', 'by Pablo Picasso', 'by Wassily Kandinsky', 'by Piet Mondrian', 'by Salvador Dalí',
    'by René Magritte', 'by Frida Kahlo', 'by Edward Hopper', 'by Georgia O\'Keeffe', 'by Andy Warhol', 'by Roy Lichtenstein',
    'by Katsushika Hokusai', 'by Utagawa Hiroshige', 'by John Singer Sargent', 'by William Turner', 'by Ivan Aivazovsky',
    'by Hieronymus Bosch', 'by Pieter Bruegel the Elder', 'by Sandro Botticelli', 'by Diego Velázquez', 'by Francisco Goya',
  ],
};
