"""Models opened from Hugging Face-layout folders (GPT-2 and the Llama family), computed in numpy."""
