"""Courses (workshops): the book of courses and what making, joining and ending one does (book), their
page, invite link and REST API (page, templates/), and the trainer's command line (cli)."""
