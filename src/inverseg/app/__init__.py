"""The studio: a local web app to paint layouts into photos and to edit photos by their layout (``inverseg serve``)."""
