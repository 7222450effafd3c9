//! The messages put to the model. The question text follows a fixed
//! `Question:` line so that tools (and the simulator) can find it.

use answerloop_schema::Question;

use super::{ChatRequest, Message};

pub const SYSTEM: &str = "You answer questions from a community question-and-answer site. \
Answer the question directly and helpfully in a few plain sentences.";

/// The line before the question text in every user message.
pub const QUESTION_MARKER: &str = "Question:\n";

const REGENERATE_NOTE: &str = "Your previous answer to this question was judged incomplete. \
Give a direct, complete answer.";

/// How a regenerated question is put to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegeneratePrompt {
    /// Tell the model its previous answer was judged incomplete.
    Feedback,
    /// Ask again exactly as the first time: with each attempt's own seed
    /// at a temperature above 0, a new draw.
    #[default]
    Plain,
    /// Show the model its best answer so far and ask for a fuller one that
    /// keeps what was right: the model sees what it is to improve on.
    Revise,
}

const REVISE_NOTE: &str = "Below is your previous answer to this question. It was judged to miss much of what a good answer says. Write a new, more complete answer: give the answer directly, then the specific facts, reasons or steps the person asking needs. Keep what was right.";

/// How much of the previous answer a revise prompt quotes, at most.
const REVISE_QUOTE_CHARS: usize = 1200;

/// The chat request for `question`.
pub fn request(
    question: &Question,
    style: RegeneratePrompt,
    max_tokens: u32,
    temperature: f32,
) -> ChatRequest {
    let mut user = String::new();
    if question.attempt > 1 {
        match (style, &question.best) {
            (RegeneratePrompt::Plain, _) => {}
            (RegeneratePrompt::Revise, Some(best)) => {
                user.push_str(REVISE_NOTE);
                user.push_str("\n\nPrevious answer:\n");
                let quote: String = best.answer.chars().take(REVISE_QUOTE_CHARS).collect();
                user.push_str(quote.trim());
                user.push_str("\n\n");
            }
            // Without an earlier answer to show, say what feedback says.
            (RegeneratePrompt::Feedback | RegeneratePrompt::Revise, _) => {
                user.push_str(REGENERATE_NOTE);
                user.push_str("\n\n");
            }
        }
    }
    user.push_str(QUESTION_MARKER);
    user.push_str(&question.text());
    ChatRequest {
        messages: vec![Message::system(SYSTEM), Message::user(user)],
        max_tokens,
        temperature,
        seed: None,
    }
}

/// The question text in a user message built by [`request`], or the whole
/// message when it has no marker.
pub fn question_text(user_message: &str) -> &str {
    user_message
        .rsplit_once(QUESTION_MARKER)
        .map_or(user_message, |(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(attempt: u32) -> Question {
        Question::new("Why?", "Because I ask.", "r", 1).at_attempt(attempt)
    }

    #[test]
    fn first_attempt_asks_plainly_and_the_text_can_be_found_again() {
        let r = request(&question(1), RegeneratePrompt::Feedback, 100, 0.0);
        let user = &r.messages[1].content;
        assert!(!user.contains("incomplete"));
        assert_eq!(question_text(user), "Why?\nBecause I ask.");
    }

    #[test]
    fn revise_quotes_the_best_answer_so_far_before_the_question() {
        let mut q = question(2);
        q.best = Some(answerloop_schema::Best {
            answer: "  Because.  ".into(),
            score: 0.2,
            attempt: 1,
            model: String::new(),
            provider: String::new(),
        });
        let r = request(&q, RegeneratePrompt::Revise, 100, 0.7);
        let user = &r.messages[1].content;
        assert!(user.starts_with(REVISE_NOTE), "{user}");
        assert!(
            user.contains("Previous answer:\nBecause.\n\nQuestion:"),
            "{user}"
        );
        assert_eq!(question_text(user), "Why?\nBecause I ask.");
        // Without a best answer it says what feedback says.
        let r = request(&question(2), RegeneratePrompt::Revise, 100, 0.7);
        assert!(r.messages[1].content.starts_with(REGENERATE_NOTE));
        // The first attempt is asked plainly whatever the strategy.
        let first = request(&question(1), RegeneratePrompt::Revise, 100, 0.7);
        assert_eq!(
            first.messages,
            request(&question(1), RegeneratePrompt::Plain, 100, 0.7).messages
        );
    }

    #[test]
    fn regenerated_attempt_carries_the_feedback_unless_plain() {
        let r = request(&question(2), RegeneratePrompt::Feedback, 100, 0.0);
        assert!(r.messages[1].content.starts_with(REGENERATE_NOTE));
        assert_eq!(
            question_text(&r.messages[1].content),
            "Why?\nBecause I ask."
        );
        let plain = request(&question(2), RegeneratePrompt::Plain, 100, 0.0);
        assert_eq!(
            plain.messages,
            request(&question(1), RegeneratePrompt::Plain, 100, 0.0).messages
        );
    }
}
