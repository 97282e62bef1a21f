"""The tutorial's example apps (Flask, Pyramid, Django) and a dependency-free hello."""
