/** The `Version` every infotext carries (CLI, server and training samples alike) and the server reports. */
export const VERSION = 'lora-scripts v0.1.0';
